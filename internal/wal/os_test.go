package wal

import "github.com/zerolossmq/zeroloss/internal/vfs"

func osFS() vfs.FS { return vfs.OS }

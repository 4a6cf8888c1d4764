//go:build !linux

package bench

// tmpfsDir returns "" and why: follower=tmpfs uses Linux's /dev/shm.
func tmpfsDir() (dir, why string) {
	return "", "follower=tmpfs needs Linux's /dev/shm"
}

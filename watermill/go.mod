module github.com/zerolossmq/zeroloss/watermill

go 1.26.8

replace github.com/zerolossmq/zeroloss => ../

require (
	github.com/ThreeDotsLabs/watermill v1.4.7
	github.com/stretchr/testify v1.12.1
	github.com/zerolossmq/zeroloss v0.0.0-00010101000000-000000000000
)

require (
	github.com/cenkalti/backoff/v3 v3.2.2 // indirect
	github.com/google/uuid v1.6.0 // indirect
	github.com/lithammer/shortuuid/v3 v3.0.7 // indirect
	github.com/oklog/ulid v1.3.1 // indirect
	github.com/pkg/errors v0.9.1 // indirect
	github.com/sony/gobreaker v1.0.0 // indirect
	go.yaml.in/yaml/v3 v3.0.5 // indirect
	golang.org/x/sys v0.50.0 // indirect
)

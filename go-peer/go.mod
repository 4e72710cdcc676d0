// The grpc-go peer. It builds offline from Debian 12's Go packages
// (/usr/share/gocode/src, golang-go 1.19): go-peer/build.sh links them into
// a vendor directory it generates beside a copy of this module, so the
// versions below are the Debian packages' and no module proxy is asked.
module catalogue-go-peer

go 1.19

require (
	github.com/grpc-ecosystem/go-grpc-prometheus v1.2.0
	github.com/prometheus/client_golang v1.14.0
	google.golang.org/grpc v1.33.3
	google.golang.org/protobuf v1.28.1
)

require (
	github.com/beorn7/perks v1.0.1 // indirect
	github.com/cespare/xxhash/v2 v2.1.1 // indirect
	github.com/golang/protobuf v1.5.2 // indirect
	github.com/matttproud/golang_protobuf_extensions v1.0.1 // indirect
	github.com/prometheus/client_model v0.3.0 // indirect
	github.com/prometheus/common v0.39.0 // indirect
	github.com/prometheus/procfs v0.8.0 // indirect
	golang.org/x/net v0.7.0 // indirect
	golang.org/x/sys v0.3.0 // indirect
	golang.org/x/text v0.7.0 // indirect
	// Debian's golang-google-genproto-dev is a snapshot of 2020-04-13.
	google.golang.org/genproto v0.0.0 // indirect
)

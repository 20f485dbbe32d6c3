// Package api is the ttrpc API between ketchd and ketch-shim, generated from
// shim.proto with protoc (Debian's protobuf-compiler) and the plugins pinned
// as go.mod tools, so the generated code matches the module's protobuf and
// ttrpc versions.
package api

//go:generate sh -c "protoc --plugin=protoc-gen-go=$(go tool -n protoc-gen-go) --plugin=protoc-gen-go-ttrpc=$(go tool -n protoc-gen-go-ttrpc) --go_out=paths=source_relative:. --go-ttrpc_out=paths=source_relative:. shim.proto"

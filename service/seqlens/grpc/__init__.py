"""The gRPC transport: server, thin servicers, converters, error interceptor, auth."""

"""HTTP and websocket routes of the inference server: parse, call a service, return a schema."""

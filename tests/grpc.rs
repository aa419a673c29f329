//! grpc tests (placeholder).

//! single_node tests (placeholder).

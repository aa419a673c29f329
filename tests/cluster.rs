//! cluster tests (placeholder).

//! `ServerConfig`: the limits of the HTTP API.

/// Limits of the HTTP API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerConfig {
    /// Largest accepted request body, in bytes (larger: 413).
    pub max_body_bytes: usize,
    /// Largest page a list may ask for (`limit`); larger: 400.
    pub max_page_size: u32,
    /// Page size when `limit` is absent.
    pub default_page_size: u32,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            max_body_bytes: 1024 * 1024,
            max_page_size: 500,
            default_page_size: 100,
        }
    }
}

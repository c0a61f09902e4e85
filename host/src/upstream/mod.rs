//! aerie in front of Wings (`upstream:`): the node's address is aerie's, and everything
//! aerie does not serve itself is passed through to Wings on a loopback port. Each concern
//! has its module: passing HTTP requests through, relaying the server websocket with
//! aerie's backup events added, and asking Wings to stop a server before a restore.

pub mod power;
pub mod proxy;
pub mod socket;

/// Wings on this node, as aerie reaches it.
#[derive(Debug, Clone)]
pub struct Wings {
    /// Wings' base URL, without a trailing slash (e.g. `http://127.0.0.1:8081`).
    pub url: String,
    /// The node token: Wings checks the same bearer token the Panel sends aerie.
    pub token: String,
}

impl Wings {
    /// Wings at `url`, reached with the node `token`.
    pub fn new(url: &str, token: &str) -> Self {
        Self {
            url: url.trim_end_matches('/').to_string(),
            token: token.to_string(),
        }
    }
}

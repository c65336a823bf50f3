//! Who may do what: the roles of tokens and sessions.

use serde::{Deserialize, Serialize};

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Writes its own host's reports; reads nothing.
    Agent,
    /// Reads history.
    Read,
    /// Reads history and manages tokens.
    Admin,
}

impl Role {
    /// The lowercase name (`agent`, `read`, `admin`).
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Agent => "agent",
            Role::Read => "read",
            Role::Admin => "admin",
        }
    }
}

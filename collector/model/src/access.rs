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

    /// Parses a role's name.
    pub fn parse(name: &str) -> Option<Role> {
        [Role::Agent, Role::Read, Role::Admin]
            .into_iter()
            .find(|r| r.as_str() == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_roles_name_parses_back_to_it_and_nothing_else_does() {
        for role in [Role::Agent, Role::Read, Role::Admin] {
            assert_eq!(Role::parse(role.as_str()), Some(role));
        }
        assert_eq!(Role::parse("Admin"), None);
        assert_eq!(Role::parse("root"), None);
    }
}

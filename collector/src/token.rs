//! Token secrets: made from the OS's random source, shown once, stored only
//! as a SHA-256 hash.

use sha2::{Digest, Sha256};

/// Prefix of every portwatch token, so a leaked one is recognisable (secret scanners).
pub const PREFIX: &str = "pw_";

/// A new random token secret: `pw_` and 64 hex digits (256 bits).
pub fn generate() -> Result<String, getrandom::Error> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes)?;
    Ok(format!("{PREFIX}{}", hex::encode(bytes)))
}

/// The hash under which a secret is stored and looked up.
pub fn hash(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.trim().as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_random_prefixed_and_hash_stably() {
        let a = generate().unwrap();
        let b = generate().unwrap();
        assert_ne!(a, b);
        assert!(a.starts_with(PREFIX) && a.len() == PREFIX.len() + 64);
        assert_eq!(
            hash(&a),
            hash(&format!("{a}\n")),
            "a trailing newline from a token file does not matter"
        );
        assert_ne!(hash(&a), hash(&b));
        assert_eq!(hash(&a).len(), 64);
    }
}

//! Tokens: created, found by their hash, listed, revoked and rotated.

use portwatch_collector::store::{Store, StoreError, TokenRow, TokenState};
use portwatch_model::Role;

use super::build::*;

fn agent_token(hash: &str, at: i64) -> TokenRow {
    TokenRow {
        name: "agent:web-3".into(),
        role: Role::Agent,
        host: Some("web-3".into()),
        hash: hash.into(),
        created_at: ts(at),
        revoked_at: None,
    }
}

pub fn tokens_are_created_found_listed_and_revoked(store: &dyn Store) {
    let token = |name: &str, role, host: Option<&str>, hash: &str| TokenRow {
        name: name.into(),
        role,
        host: host.map(str::to_owned),
        hash: hash.into(),
        created_at: ts(0),
        revoked_at: None,
    };
    let agent = token("agent:web-3", Role::Agent, Some("web-3"), "aa11");
    let admin = token("ops", Role::Admin, None, "bb22");
    store.create_token(&agent).unwrap();
    store.create_token(&admin).unwrap();
    store.create_token(&token("grafana", Role::Read, None, "cc33")).unwrap();

    assert_eq!(store.token_by_hash("aa11").unwrap(), Some(agent.clone()));
    assert_eq!(store.token_by_hash("ffff").unwrap(), None);
    let names: Vec<_> = store.tokens().unwrap().into_iter().map(|t| (t.name, t.role)).collect();
    assert_eq!(
        names,
        vec![
            ("agent:web-3".to_owned(), Role::Agent),
            ("grafana".to_owned(), Role::Read),
            ("ops".to_owned(), Role::Admin)
        ]
    );

    let duplicate = store.create_token(&token("ops", Role::Read, None, "dd44"));
    assert!(
        matches!(&duplicate, Err(StoreError::Exists(what)) if what.contains("ops")),
        "{duplicate:?}"
    );
    let same_secret = store.create_token(&token("other", Role::Read, None, "aa11"));
    assert!(matches!(same_secret, Err(StoreError::Exists(_))), "{same_secret:?}");
    assert_eq!(store.tokens().unwrap().len(), 3);

    assert!(store.revoke_token("agent:web-3", ts(50)).unwrap());
    assert!(!store.revoke_token("agent:web-3", ts(60)).unwrap());
    assert!(!store.revoke_token("nobody", ts(60)).unwrap());
    let revoked = store.token_by_hash("aa11").unwrap().unwrap();
    assert_eq!(revoked.revoked_at, Some(ts(50)));
}

pub fn a_revoked_tokens_name_can_be_given_to_a_new_token(store: &dyn Store) {
    store.create_token(&agent_token("old", 0)).unwrap();
    assert!(store.revoke_token("agent:web-3", ts(10)).unwrap());
    store.create_token(&agent_token("new", 20)).unwrap();
    assert_eq!(store.token_by_hash("old").unwrap().unwrap().revoked_at, Some(ts(10)));
    assert_eq!(store.token_by_hash("new").unwrap(), Some(agent_token("new", 20)));
    let listed: Vec<_> = store.tokens().unwrap().into_iter().map(|t| t.hash).collect();
    assert_eq!(listed, ["old", "new"], "by name, then oldest first");
    // While one of the name is valid, another cannot be created.
    let again = store.create_token(&agent_token("third", 30));
    assert!(
        matches!(&again, Err(StoreError::Exists(what)) if what.contains("agent:web-3")),
        "{again:?}"
    );
}

pub fn a_rotated_token_works_until_its_overlap_ends_and_its_replacement_from_the_rotation_on(store: &dyn Store) {
    let first = agent_token("first", 0);
    store.create_token(&first).unwrap();
    store
        .create_token(&TokenRow {
            name: "ops".into(),
            role: Role::Read,
            host: None,
            ..agent_token("ops", 0)
        })
        .unwrap();

    let rotated = store
        .rotate_token("agent:web-3", "second", ts(10), ts(20))
        .unwrap()
        .unwrap();
    assert_eq!(rotated.new, agent_token("second", 10), "same name, role and host");
    let first_now = TokenRow {
        revoked_at: Some(ts(20)),
        ..first.clone()
    };
    assert_eq!(rotated.replaced, vec![first_now.clone()]);
    assert_eq!(store.token_by_hash("first").unwrap(), Some(first_now.clone()));
    assert!(first_now.valid_at(ts(19)) && !first_now.valid_at(ts(20)));
    assert_eq!(first_now.state(ts(19)), TokenState::Expires(ts(20)));
    assert_eq!(first_now.state(ts(20)), TokenState::Revoked(ts(20)));
    assert_eq!(
        store.token_by_hash("second").unwrap().unwrap().state(ts(20)),
        TokenState::Active
    );
    // During the overlap the name is taken; the other tokens are untouched.
    assert!(matches!(
        store.create_token(&agent_token("x", 15)),
        Err(StoreError::Exists(_))
    ));
    assert_eq!(store.token_by_hash("ops").unwrap().unwrap().revoked_at, None);

    // Rotated again within the overlap: the first keeps its nearer end, the second gets the new one.
    let again = store
        .rotate_token("agent:web-3", "third", ts(12), ts(100))
        .unwrap()
        .unwrap();
    let ends: Vec<_> = again.replaced.iter().map(|t| (t.hash.as_str(), t.revoked_at)).collect();
    assert_eq!(ends, [("first", Some(ts(20))), ("second", Some(ts(100)))]);
    // Revoking the name ends every token of it that still works, at once.
    assert!(store.revoke_token("agent:web-3", ts(13)).unwrap());
    let ends: Vec<_> = store
        .tokens()
        .unwrap()
        .into_iter()
        .filter(|t| t.name == "agent:web-3")
        .map(|t| t.revoked_at)
        .collect();
    assert_eq!(ends, [Some(ts(13)); 3]);

    // Nothing valid to rotate: nothing is stored.
    assert_eq!(
        store.rotate_token("agent:web-3", "fourth", ts(14), ts(24)).unwrap(),
        None
    );
    assert_eq!(store.rotate_token("nobody", "fifth", ts(14), ts(24)).unwrap(), None);
    assert_eq!(store.token_by_hash("fourth").unwrap(), None);
    // A secret already used is refused, and the rotation with it.
    let reused = store.rotate_token("ops", "first", ts(14), ts(24));
    assert!(matches!(reused, Err(StoreError::Exists(_))), "{reused:?}");
    assert_eq!(
        store.token_by_hash("ops").unwrap().unwrap().revoked_at,
        None,
        "rolled back"
    );
}

//! The portwatch collector (built in a later issue).

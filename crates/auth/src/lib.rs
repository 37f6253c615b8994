//! switchboard-auth

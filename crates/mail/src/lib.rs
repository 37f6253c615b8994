//! switchboard-mail

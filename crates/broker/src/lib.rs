//! switchboard-broker

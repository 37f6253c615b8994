//! switchboard-frontend

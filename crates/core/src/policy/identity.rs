//! Who the instance process is on the host: `process.user` and `noNewPrivileges`, so that
//! what the guest creates through a preopen is owned as the spec says, and host permissions
//! apply to it as to that user.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    pub uid: u32,
    pub gid: u32,
    pub additional_gids: Vec<u32>,
    pub umask: Option<u32>,
    pub no_new_privileges: bool,
}

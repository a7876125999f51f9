//! How the task service answers: errors as ttrpc statuses (the code kubelet and `ctr` act
//! on, the message they print) and times as protobuf timestamps.

use containerd_shim::protos::protobuf::well_known_types::timestamp::Timestamp;
use containerd_shim::protos::ttrpc::{self, Code};
use containerd_shim::TtrpcResult;

use crate::error::Error;

pub(super) fn now() -> (i64, i32) {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    (d.as_secs() as i64, d.subsec_nanos() as i32)
}

pub(super) fn timestamp((seconds, nanos): (i64, i32)) -> Timestamp {
    Timestamp {
        seconds,
        nanos,
        ..Default::default()
    }
}

pub(super) fn status(code: Code, message: impl Into<String>) -> ttrpc::Error {
    ttrpc::Error::RpcStatus(ttrpc::get_status(code, message.into()))
}

pub(super) fn not_found(id: &str) -> ttrpc::Error {
    status(Code::NOT_FOUND, format!("container {id} not found"))
}

pub(super) fn unimplemented(what: &str) -> ttrpc::Error {
    status(
        Code::UNIMPLEMENTED,
        format!("{what} is not supported for Wasm containers"),
    )
}

pub(super) fn parse_signal(signal: u32) -> TtrpcResult<nix::sys::signal::Signal> {
    nix::sys::signal::Signal::try_from(signal as i32)
        .map_err(|_| status(Code::INVALID_ARGUMENT, format!("invalid signal {signal}")))
}

impl From<Error> for ttrpc::Error {
    fn from(e: Error) -> Self {
        let code = match &e {
            Error::Io { .. } | Error::Cache(_) | Error::Cgroup(_) | Error::Native { .. } => {
                Code::INTERNAL
            }
            Error::Unsupported(_) => Code::UNIMPLEMENTED,
            Error::Denied(_) => Code::PERMISSION_DENIED,
            _ => Code::INVALID_ARGUMENT,
        };
        status(code, e.to_string())
    }
}

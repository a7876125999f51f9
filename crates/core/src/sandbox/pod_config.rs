//! The few fields of CRI's `runtime.v1.PodSandboxConfig` the sandbox holder needs, read from
//! the protobuf bytes containerd passes in CreateSandbox (the shim has no CRI API types).

use containerd_shim::protos::protobuf::CodedInputStream;

/// How a pod's namespace is shared (CRI's `NamespaceMode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum NamespaceMode {
    /// One for the pod, held by the sandbox (`POD`, 0).
    #[default]
    Pod,
    /// Each container its own (`CONTAINER`, 1).
    Container,
    /// The host's (`NODE`, 2).
    Node,
    /// Another container's (`TARGET`, 3).
    Target,
}

impl NamespaceMode {
    fn from_proto(v: i32) -> Self {
        match v {
            1 => NamespaceMode::Container,
            2 => NamespaceMode::Node,
            3 => NamespaceMode::Target,
            _ => NamespaceMode::Pod,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodConfig {
    pub name: String,
    pub hostname: String,
    pub cgroup_parent: String,
    pub network: NamespaceMode,
    pub pid: NamespaceMode,
    pub ipc: NamespaceMode,
}

type Result<T> = std::result::Result<T, String>;

impl PodConfig {
    /// `PodSandboxConfig { metadata = 1 { name = 1 }, hostname = 2, linux = 8 {
    /// cgroup_parent = 1, security_context = 2 { namespace_options = 1 { network = 1,
    /// pid = 2, ipc = 3 } } } }`; everything else is skipped.
    pub fn decode(bytes: &[u8]) -> Result<PodConfig> {
        let mut config = PodConfig::default();
        fields(bytes, |field, input| {
            match field {
                1 => {
                    let metadata = input.read_bytes().map_err(err)?;
                    fields(&metadata, |f, i| match f {
                        1 => i
                            .read_string()
                            .map(|n| config.name = n)
                            .map(|()| true)
                            .map_err(err),
                        _ => Ok(false),
                    })?;
                }
                2 => config.hostname = input.read_string().map_err(err)?,
                8 => {
                    let linux = input.read_bytes().map_err(err)?;
                    decode_linux(&linux, &mut config)?;
                }
                _ => return Ok(false),
            }
            Ok(true)
        })?;
        Ok(config)
    }
}

fn decode_linux(bytes: &[u8], config: &mut PodConfig) -> Result<()> {
    fields(bytes, |field, input| match field {
        1 => {
            config.cgroup_parent = input.read_string().map_err(err)?;
            Ok(true)
        }
        2 => {
            let security = input.read_bytes().map_err(err)?;
            fields(&security, |f, i| match f {
                1 => {
                    let options = i.read_bytes().map_err(err)?;
                    fields(&options, |f, i| {
                        let mut mode =
                            || i.read_int32().map(NamespaceMode::from_proto).map_err(err);
                        match f {
                            1 => config.network = mode()?,
                            2 => config.pid = mode()?,
                            3 => config.ipc = mode()?,
                            _ => return Ok(false),
                        }
                        Ok(true)
                    })?;
                    Ok(true)
                }
                _ => Ok(false),
            })?;
            Ok(true)
        }
        _ => Ok(false),
    })
}

/// Call `read` for each field of a message with its field number; it returns whether it read
/// the value (else the value is skipped).
fn fields(
    bytes: &[u8],
    mut read: impl FnMut(u32, &mut CodedInputStream) -> Result<bool>,
) -> Result<()> {
    let mut input = CodedInputStream::from_bytes(bytes);
    while let Some(tag) = input.read_raw_tag_or_eof().map_err(err)? {
        let (field, wire) = (tag >> 3, tag & 7);
        if !read(field, &mut input)? {
            skip(&mut input, wire)?;
        }
    }
    Ok(())
}

fn skip(input: &mut CodedInputStream, wire: u32) -> Result<()> {
    match wire {
        0 => input.read_raw_varint64().map(drop).map_err(err),
        1 => input.read_raw_little_endian64().map(drop).map_err(err),
        2 => input.read_bytes().map(drop).map_err(err),
        5 => input.read_raw_little_endian32().map(drop).map_err(err),
        other => Err(format!("unsupported wire type {other}")),
    }
}

fn err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(n: u32, bytes: &[u8]) -> Vec<u8> {
        let mut out = vec![((n << 3) | 2) as u8, bytes.len() as u8];
        out.extend_from_slice(bytes);
        out
    }

    fn varint(n: u32, v: u8) -> Vec<u8> {
        vec![(n << 3) as u8, v]
    }

    #[test]
    fn reads_what_the_holder_needs_and_skips_the_rest() {
        let namespaces = [varint(1, 2), varint(2, 1)].concat();
        let security = [field(1, &namespaces), varint(6, 1)].concat();
        let linux = [field(1, b"/kubepods/pod1"), field(2, &security)].concat();
        let bytes = [
            field(1, &field(1, b"web")),
            field(2, b"web-0"),
            field(3, b"/var/log/pods/x"),
            field(8, &linux),
        ]
        .concat();
        let config = PodConfig::decode(&bytes).unwrap();
        assert_eq!(
            config,
            PodConfig {
                name: "web".into(),
                hostname: "web-0".into(),
                cgroup_parent: "/kubepods/pod1".into(),
                network: NamespaceMode::Node,
                pid: NamespaceMode::Container,
                ipc: NamespaceMode::Pod,
            }
        );
    }

    #[test]
    fn truncated_bytes_are_an_error() {
        assert!(PodConfig::decode(&[0x12, 0x05, b'a']).is_err());
    }
}

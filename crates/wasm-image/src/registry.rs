//! Pushing an image to a registry with the OCI distribution API: each blob (config, layers)
//! that the registry does not have is uploaded with a POST (start an upload session) and a
//! PUT of the whole blob (monolithic upload), then the manifest is PUT under the tag.
//! Anonymous access only: a registry that asks for credentials is reported as such.

use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::layout::{Blob, Image};

/// `HOST[:PORT]/REPOSITORY[:TAG]` of a registry image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    pub host: String,
    pub repository: String,
    pub tag: String,
}

impl Reference {
    /// Parses an image name whose first part is a registry host (it has a `.` or a `:`, or is
    /// `localhost`); the tag defaults to `latest`.
    pub fn parse(name: &str) -> Result<Self> {
        let (host, rest) = name.split_once('/').with_context(|| {
            format!("{name:?} names no registry: expected HOST[:PORT]/REPO[:TAG]")
        })?;
        if !(host.contains('.') || host.contains(':') || host == "localhost") {
            bail!("{name:?} names no registry host (e.g. 127.0.0.1:5000/{name})");
        }
        let (repository, tag) = match rest.rsplit_once(':') {
            Some((repo, tag)) if !tag.contains('/') => (repo, tag),
            _ => (rest, "latest"),
        };
        let repo_ok = !repository.is_empty()
            && repository.split('/').all(|part| {
                !part.is_empty()
                    && part
                        .chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "._-".contains(c))
            });
        if !repo_ok {
            bail!("{name:?}: invalid repository {repository:?} (lower-case letters, digits, . _ - and /)");
        }
        let tag_ok = !tag.is_empty()
            && tag.len() <= 128
            && tag
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
        if !tag_ok {
            bail!("{name:?}: invalid tag {tag:?}");
        }
        Ok(Reference {
            host: host.into(),
            repository: repository.into(),
            tag: tag.into(),
        })
    }
}

/// What a push did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pushed {
    pub uploaded: usize,
    pub present: usize,
}

/// Pushes `image` as `reference` to `scheme://host` (`http` or `https`).
pub fn push(image: &Image, reference: &Reference, scheme: &str) -> Result<Pushed> {
    let agent = ureq::AgentBuilder::new()
        .timeout_connect(Duration::from_secs(10))
        .timeout(Duration::from_secs(300))
        .redirects(0)
        .build();
    let base = format!("{scheme}://{}", reference.host);
    let repo = format!("{base}/v2/{}", reference.repository);
    let mut pushed = Pushed {
        uploaded: 0,
        present: 0,
    };
    for blob in std::iter::once(&image.config).chain(&image.layers) {
        if push_blob(&agent, &base, &repo, blob)? {
            pushed.uploaded += 1;
        } else {
            pushed.present += 1;
        }
    }
    let url = format!("{repo}/manifests/{}", reference.tag);
    let response = agent
        .put(&url)
        .set("Content-Type", &image.manifest.descriptor.media_type)
        .send_bytes(&image.manifest.data);
    let response = expect(response, &format!("PUT {url}"), &[201])?;
    if let Some(digest) = response.header("Docker-Content-Digest") {
        if digest != image.manifest.descriptor.digest {
            bail!(
                "the registry stored the manifest as {digest}, expected {}",
                image.manifest.descriptor.digest
            );
        }
    }
    Ok(pushed)
}

/// Uploads `blob` unless the registry has it; true if it was uploaded.
fn push_blob(agent: &ureq::Agent, base: &str, repo: &str, blob: &Blob) -> Result<bool> {
    let digest = &blob.descriptor.digest;
    let head = format!("{repo}/blobs/{digest}");
    match agent.head(&head).call() {
        Ok(r) if r.status() == 200 => return Ok(false),
        Ok(_) | Err(ureq::Error::Status(404, _)) => {}
        other => {
            expect(other, &format!("HEAD {head}"), &[200, 404])?;
        }
    }
    let start = format!("{repo}/blobs/uploads/");
    let response = expect(agent.post(&start).call(), &format!("POST {start}"), &[202])?;
    let location = response
        .header("Location")
        .with_context(|| format!("POST {start}: the registry gave no upload Location"))?;
    let mut url = if location.starts_with("http://") || location.starts_with("https://") {
        location.to_string()
    } else {
        format!("{base}{location}")
    };
    url.push(if url.contains('?') { '&' } else { '?' });
    url.push_str("digest=");
    url.push_str(digest);
    let response = agent
        .put(&url)
        .set("Content-Type", "application/octet-stream")
        .send_bytes(&blob.data);
    expect(response, &format!("PUT blob {digest}"), &[201])?;
    Ok(true)
}

/// The response if its status is one of `ok`, else an error with what the registry said.
fn expect(
    result: Result<ureq::Response, ureq::Error>,
    what: &str,
    ok: &[u16],
) -> Result<ureq::Response> {
    match result {
        Ok(r) if ok.contains(&r.status()) => Ok(r),
        Ok(r) => bail!(
            "{what}: unexpected status {} {}",
            r.status(),
            r.status_text()
        ),
        Err(ureq::Error::Status(401, _)) => {
            bail!(
                "{what}: the registry asks for credentials (401); only anonymous push is supported"
            )
        }
        Err(ureq::Error::Status(code, r)) => {
            let body = r.into_string().unwrap_or_default();
            bail!("{what}: status {code}: {}", body.trim())
        }
        Err(e) => Err(anyhow::Error::new(e).context(what.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references() {
        let r = Reference::parse("127.0.0.1:5000/test/hello:v1").unwrap();
        assert_eq!(
            (r.host.as_str(), r.repository.as_str(), r.tag.as_str()),
            ("127.0.0.1:5000", "test/hello", "v1")
        );
        let r = Reference::parse("registry.example.org/a/b").unwrap();
        assert_eq!((r.repository.as_str(), r.tag.as_str()), ("a/b", "latest"));
        assert_eq!(Reference::parse("localhost/x").unwrap().host, "localhost");
        for bad in [
            "hello",
            "test/hello:1",
            "127.0.0.1:5000/",
            "h.org/Up:1",
            "h.org/a:b c",
        ] {
            assert!(Reference::parse(bad).is_err(), "{bad}");
        }
    }
}

//! Every channel Fletch opens to another process is built by [`connect`], so frame
//! sizes, keep-alives, time-outs and TLS trust are set in exactly one place; and
//! [`ClusterSecurity`], what a process presents and trusts on those channels.

use std::sync::Arc;
use std::time::Duration;

use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};

use crate::failure::{FailureReason, TaskFailure};
use crate::member::ClusterSecret;

/// gRPC message limit for plans and batches; Flight splits batches at ~2 MiB anyway.
pub const MAX_MESSAGE_BYTES: usize = 256 << 20;
/// HTTP/2 frame size for every endpoint and server: 1 MiB frames triple loopback
/// throughput over tonic's 16 KiB default (measured in shared/STACK.md).
pub(crate) const MAX_FRAME_BYTES: u32 = 1 << 20;
/// How long opening a connection to another process may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a control call (release, drop, memory limit, membership) may take.
pub const CONTROL_CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// How often an HTTP/2 connection is pinged, both ways.
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
/// How long a ping may go unanswered before the connection counts as broken.
pub const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(20);

/// What one process presents to, and trusts of, the other members of its cluster:
/// the shared secret its calls prove membership with (none: an open cluster, loopback
/// only) and the certificate it trusts for `https://` links (a CA, or the members'
/// shared self-signed certificate). Passed to every client and server a process
/// builds, so two clusters with different secrets can live in one process (tests do).
#[derive(Clone, Debug, Default)]
pub struct ClusterSecurity {
    secret: Option<ClusterSecret>,
    trusted_ca: Option<Arc<[u8]>>,
}

impl ClusterSecurity {
    /// An open cluster whose links are plain `http://`.
    pub fn open() -> Self {
        Self::default()
    }

    /// Members prove membership with `secret` (none: an open cluster).
    pub fn with_secret(mut self, secret: Option<ClusterSecret>) -> Self {
        self.secret = secret;
        self
    }

    /// `https://` links to other members trust `ca_pem`.
    pub fn trusting(mut self, ca_pem: Vec<u8>) -> Self {
        self.trusted_ca = Some(ca_pem.into());
        self
    }

    /// The cluster secret; `None`: an open cluster.
    pub fn secret(&self) -> Option<&ClusterSecret> {
        self.secret.as_ref()
    }

    /// The PEM certificate trusted for `https://` links, if any.
    pub fn trusted_ca(&self) -> Option<&[u8]> {
        self.trusted_ca.as_deref()
    }
}

/// A lazily connecting channel to `url` with Fletch's transport settings; an
/// `https://` URL is trusted with `security`'s certificate (none: refused).
pub fn connect(url: &str, security: &ClusterSecurity) -> Result<Channel, TaskFailure> {
    let bad = |message: String| TaskFailure::new(FailureReason::BadRequest, message, 0, 0, url);
    let mut endpoint = Endpoint::from_shared(url.to_string())
        .map_err(|e| bad(format!("invalid executor URL {url}: {e}")))?;
    if url.starts_with("https://") {
        let Some(ca) = security.trusted_ca() else {
            return Err(bad(format!(
                "{url} serves TLS, but this process trusts no certificate (--tls-ca)"
            )));
        };
        let tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca));
        endpoint = endpoint
            .tls_config(tls)
            .map_err(|e| bad(format!("TLS for {url}: {e}")))?;
    }
    Ok(endpoint
        .max_frame_size(MAX_FRAME_BYTES)
        .tcp_nodelay(true)
        .connect_timeout(CONNECT_TIMEOUT)
        // A peer that vanished without closing the connection (a host gone, a cable
        // pulled) is noticed by its missing pings, not only by the next call.
        .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
        .keep_alive_timeout(KEEPALIVE_TIMEOUT)
        .keep_alive_while_idle(true)
        .connect_lazy())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn https_needs_a_trusted_certificate_and_bad_urls_are_named() {
        let refused = connect("https://127.0.0.1:1", &ClusterSecurity::open())
            .expect_err("no certificate trusted");
        assert!(
            refused.message.contains("trusts no certificate"),
            "{refused}"
        );
        let bad = connect("not a url", &ClusterSecurity::open()).expect_err("bad url");
        assert!(bad.message.contains("not a url"), "{bad}");
    }
}

//! Cluster membership, proved with a shared secret. The coordinator and the executors
//! of one cluster hold the same [`ClusterSecret`] (`--cluster-secret-file`); a member
//! presents `authorization: Fletch-Member <issued-at>.<HMAC>`, a short-lived proof made
//! fresh for every call, so the secret itself never crosses the wire. Only members may
//! run tasks, move or drop table pieces, set memory limits and register, heartbeat or
//! leave. A signed-in user is not a member: all a user ever gets from an executor is the
//! one query result a [`ResultTicket`] names, and only while the coordinator's signature
//! on that ticket holds and has not expired.
//!
//! A cluster without a secret is open: every caller counts as a member, so such a
//! process may only listen on loopback ([`require_loopback_without_secret`]).

use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use prost::Message;
use ring::hmac;
use tonic::Status;
use tonic::metadata::MetadataMap;

use crate::auth::authorization;
use crate::failure::{FailureReason, TaskFailure};
use crate::protocol::ResultTicket;

/// The `authorization` scheme of a member's proof.
const MEMBER_SCHEME: &str = "Fletch-Member";
/// How far a member proof's time may be from this process's clock: covers clock skew
/// between hosts; a proof seen on the wire is useless after it.
const MEMBER_PROOF_WINDOW: Duration = Duration::from_secs(300);
/// The shortest secret accepted.
pub const MIN_SECRET_BYTES: usize = 16;

/// The secret a cluster's members share. Its bytes never leave the process.
#[derive(Clone)]
pub struct ClusterSecret {
    key: hmac::Key,
}

impl std::fmt::Debug for ClusterSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClusterSecret(..)")
    }
}

/// Marks a request whose caller proved membership (or any request, in an open cluster).
#[derive(Debug, Clone, Copy)]
pub struct Member;

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl ClusterSecret {
    /// A secret from its text (surrounding white space is not part of it); at least
    /// [`MIN_SECRET_BYTES`] long.
    pub fn new(secret: &str) -> Result<Self, String> {
        let secret = secret.trim();
        if secret.len() < MIN_SECRET_BYTES {
            return Err(format!(
                "the cluster secret is {} bytes long; it needs at least {MIN_SECRET_BYTES}",
                secret.len()
            ));
        }
        Ok(Self {
            key: hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes()),
        })
    }

    /// A random secret, for a cluster that lives in one process (`fletch serve`, the
    /// shell's embedded cluster): nothing outside the process can be a member.
    pub fn random() -> Result<Self, String> {
        let key = hmac::Key::generate(hmac::HMAC_SHA256, &ring::rand::SystemRandom::new())
            .map_err(|_| "the system's random number generator failed".to_string())?;
        Ok(Self { key })
    }

    /// What is signed for `purpose`: the purpose keeps one kind of signature from
    /// passing for another.
    fn signed_bytes(purpose: &str, message: &[u8]) -> Vec<u8> {
        [purpose.as_bytes(), &[0], message].concat()
    }

    fn sign(&self, purpose: &str, message: &[u8]) -> hmac::Tag {
        hmac::sign(&self.key, &Self::signed_bytes(purpose, message))
    }

    /// In constant time (ring compares the tags).
    fn verify(&self, purpose: &str, message: &[u8], signature: &[u8]) -> bool {
        hmac::verify(&self.key, &Self::signed_bytes(purpose, message), signature).is_ok()
    }

    /// The `authorization` header value proving membership now.
    pub fn member_header(&self) -> String {
        let issued = now_ms().to_string();
        let tag = self.sign("member", issued.as_bytes());
        format!(
            "{MEMBER_SCHEME} {issued}.{}",
            URL_SAFE_NO_PAD.encode(tag.as_ref())
        )
    }

    /// Checks the value of a `Fletch-Member` proof (after the scheme).
    fn check_member_proof(&self, proof: &str) -> Result<(), Status> {
        let refused = || not_member("not a member of this cluster: wrong cluster secret");
        let (issued, signature) = proof.split_once('.').ok_or_else(refused)?;
        let signature = URL_SAFE_NO_PAD.decode(signature).map_err(|_| refused())?;
        if !self.verify("member", issued.as_bytes(), &signature) {
            return Err(refused());
        }
        let issued: u64 = issued.parse().map_err(|_| refused())?;
        let window = u64::try_from(MEMBER_PROOF_WINDOW.as_millis()).unwrap_or(u64::MAX);
        if now_ms().abs_diff(issued) > window {
            return Err(not_member(
                "membership proof too old or from the future: check the hosts' clocks",
            ));
        }
        Ok(())
    }

    /// Signs `ticket` for a client, valid for `life` from now.
    pub fn sign_result_ticket(&self, ticket: &mut ResultTicket, life: Duration) {
        let life = u64::try_from(life.as_millis()).unwrap_or(u64::MAX);
        self.sign_result_ticket_until(ticket, now_ms().saturating_add(life));
    }

    fn sign_result_ticket_until(&self, ticket: &mut ResultTicket, expires_at_ms: u64) {
        ticket.expires_at_ms = expires_at_ms;
        ticket.signature = self
            .sign("result ticket", &result_ticket_message(ticket))
            .as_ref()
            .to_vec()
            .into();
    }

    /// Whether `ticket` carries this cluster's unexpired signature.
    pub fn check_result_ticket(&self, ticket: &ResultTicket) -> Result<(), Status> {
        if !self.verify(
            "result ticket",
            &result_ticket_message(ticket),
            &ticket.signature,
        ) {
            return Err(not_member(
                "result ticket not signed by this cluster's coordinator",
            ));
        }
        if now_ms() > ticket.expires_at_ms {
            return Err(not_member(
                "result ticket expired: ask the coordinator for the result again",
            ));
        }
        Ok(())
    }
}

/// What a result ticket's signature covers: everything in it but the signature.
fn result_ticket_message(ticket: &ResultTicket) -> Vec<u8> {
    ResultTicket {
        signature: Default::default(),
        ..ticket.clone()
    }
    .encode_to_vec()
}

/// The request check of a process whose members share `secret`: a valid member proof
/// marks the request [`Member`]; a wrong one is refused here; any other caller passes
/// unmarked, and each call decides what an unmarked caller may do. Without a secret
/// every request is marked.
pub fn member_check(
    secret: Option<ClusterSecret>,
) -> impl Fn(&mut tonic::Request<()>) -> Result<(), Status> + Clone + Send + Sync + 'static {
    move |request: &mut tonic::Request<()>| {
        let Some(secret) = &secret else {
            request.extensions_mut().insert(Member);
            return Ok(());
        };
        if let Some(proof) = member_proof(request.metadata())? {
            secret.check_member_proof(proof)?;
            request.extensions_mut().insert(Member);
        }
        Ok(())
    }
}

/// The proof in a `Fletch-Member` authorization header, if the request has one.
pub fn member_proof(metadata: &MetadataMap) -> Result<Option<&str>, Status> {
    let Some(header) = authorization(metadata)? else {
        return Ok(None);
    };
    let header = header.trim();
    let (scheme, value) = header.split_once(' ').unwrap_or((header, ""));
    Ok(scheme
        .eq_ignore_ascii_case(MEMBER_SCHEME)
        .then_some(value.trim()))
}

/// Checks `proof` with `secret`: for a service that sees member proofs outside
/// [`member_check`] (the coordinator's endpoint, which admits users too).
pub fn check_member_proof(secret: &ClusterSecret, proof: &str) -> Result<(), Status> {
    secret.check_member_proof(proof)
}

/// Refuses a call that only members may make, unless `extensions` says the caller is one.
pub fn require_member(extensions: &tonic::Extensions, call: &str) -> Result<(), Status> {
    if extensions.get::<Member>().is_some() {
        return Ok(());
    }
    Err(not_member(format!(
        "{call} is for cluster members only: present the cluster secret \
         (--cluster-secret-file); signed-in users cannot call it"
    )))
}

/// A refusal with Fletch's typed reason, `PermissionDenied` on the wire.
fn not_member(message: impl Into<String>) -> Status {
    TaskFailure::outside_tasks(FailureReason::NotMember, message, "").to_status()
}

/// Refuses to serve beyond loopback without a cluster secret: there every caller
/// would count as a member.
pub fn require_loopback_without_secret(
    addr: SocketAddr,
    secret: Option<&ClusterSecret>,
    what: &str,
) -> std::io::Result<()> {
    if secret.is_none() && !addr.ip().is_loopback() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!(
                "{addr} is not a loopback address: {what} serving beyond loopback needs a \
                 cluster secret (--cluster-secret-file or FLETCH_CLUSTER_SECRET)"
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::PartitionTicket;

    fn secret(text: &str) -> ClusterSecret {
        ClusterSecret::new(text).expect("secret")
    }

    fn proof(header: &str) -> &str {
        header.split_once(' ').expect("scheme and proof").1
    }

    #[test]
    fn member_proofs_verify_only_with_the_same_secret() {
        let ours = secret("correct horse battery staple");
        let theirs = secret("some other cluster's secret");
        assert!(
            ours.check_member_proof(proof(&ours.member_header()))
                .is_ok()
        );
        assert!(
            theirs
                .check_member_proof(proof(&ours.member_header()))
                .is_err()
        );
        assert!(ours.check_member_proof("1.AAAA").is_err());
        assert!(ours.check_member_proof("garbage").is_err());
        // A proof made long ago (replayed from a capture) is refused.
        let old = "1000";
        let tag = ours.sign("member", old.as_bytes());
        let stale = format!("{old}.{}", URL_SAFE_NO_PAD.encode(tag.as_ref()));
        let err = ours.check_member_proof(&stale).expect_err("stale");
        assert!(err.message().contains("too old"), "{err}");
    }

    #[test]
    fn short_secrets_are_refused_and_random_ones_differ() {
        assert!(ClusterSecret::new("short").is_err());
        let a = ClusterSecret::random().expect("random");
        let b = ClusterSecret::random().expect("random");
        assert!(b.check_member_proof(proof(&a.member_header())).is_err());
    }

    #[test]
    fn result_tickets_hold_only_unchanged_unexpired_and_signed() {
        let ours = secret("correct horse battery staple");
        let mut ticket = ResultTicket {
            handle: "h".into(),
            partition: Some(PartitionTicket {
                query_id: "q".into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        ours.sign_result_ticket(&mut ticket, Duration::from_secs(60));
        assert!(ours.check_result_ticket(&ticket).is_ok());
        assert!(
            secret("some other cluster's secret")
                .check_result_ticket(&ticket)
                .is_err()
        );
        let mut other_query = ticket.clone();
        if let Some(p) = other_query.partition.as_mut() {
            p.query_id = "another".into();
        }
        assert!(ours.check_result_ticket(&other_query).is_err());
        let mut longer = ticket.clone();
        longer.expires_at_ms += 1;
        assert!(ours.check_result_ticket(&longer).is_err());
        ours.sign_result_ticket_until(&mut ticket, 1);
        let err = ours.check_result_ticket(&ticket).expect_err("expired");
        assert!(err.message().contains("expired"), "{err}");
    }
}

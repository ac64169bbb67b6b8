//! One ACME order (RFC 8555 §7.4): new-order for the names, one challenge per pending
//! authorization answered by turnd's own listeners, finalize with a fresh key's CSR, and the
//! certificate chain. Every step is logged with the CA's own error text on failure.

use super::challenges::Challenges;
use super::ChallengeKind;
use anyhow::{anyhow, bail, Context, Result};
use instant_acme::{
    Account, AuthorizationStatus, ChallengeType, Identifier, NewOrder, OrderStatus, RetryPolicy,
};
use std::time::Duration;

/// A certificate the CA issued, and its key.
pub struct Issued {
    pub chain_pem: String,
    pub key_pem: String,
}

/// How long the CA may take to validate, then to issue.
const POLL: RetryPolicy = RetryPolicy::new()
    .initial_delay(Duration::from_millis(250))
    .backoff(1.5)
    .timeout(Duration::from_secs(90));

/// Whether an error is the CA's problem document of this type (RFC 8555 §6.7, the part after
/// `urn:ietf:params:acme:error:`), e.g. `rateLimited`.
pub fn is_problem(e: &anyhow::Error, kind: &str) -> bool {
    e.chain().any(|c| {
        matches!(c.downcast_ref::<instant_acme::Error>(),
            Some(instant_acme::Error::Api(p)) if p.r#type.as_deref().and_then(|t| t.rsplit_once(':')).is_some_and(|(_, k)| k == kind))
    })
}

/// Orders a certificate for `domains`, answering `kind` challenges through `challenges`.
/// The challenges are withdrawn whatever the outcome.
pub async fn obtain(
    account: &Account,
    domains: &[String],
    kind: ChallengeKind,
    challenges: &Challenges,
) -> Result<Issued> {
    let result = run(account, domains, kind, challenges).await;
    challenges.clear();
    result
}

async fn run(
    account: &Account,
    domains: &[String],
    kind: ChallengeKind,
    challenges: &Challenges,
) -> Result<Issued> {
    let ids: Vec<Identifier> = domains.iter().map(|d| Identifier::Dns(d.clone())).collect();
    let mut order = account
        .new_order(&NewOrder::new(&ids))
        .await
        .context("the CA refused the order")?;
    tracing::info!(order = order.url(), domains = ?domains, "ACME order created");
    let ty = match kind {
        ChallengeKind::TlsAlpn01 => ChallengeType::TlsAlpn01,
        ChallengeKind::Http01 => ChallengeType::Http01,
    };
    let mut authzs = order.authorizations();
    while let Some(authz) = authzs.next().await {
        let mut authz = authz.context("cannot read an authorization")?;
        match authz.status {
            AuthorizationStatus::Pending => {}
            // Validated earlier (authorizations are reused for a while): nothing to answer.
            AuthorizationStatus::Valid => continue,
            other => bail!("an authorization is {other:?}, not pending"),
        }
        let mut challenge = authz
            .challenge(ty.clone())
            .ok_or_else(|| anyhow!("the CA does not offer {} for this name", kind.label()))?;
        let name = challenge.identifier().to_string();
        let key_auth = challenge.key_authorization();
        match kind {
            ChallengeKind::Http01 => challenges.put_http(&challenge.token, key_auth.as_str()),
            ChallengeKind::TlsAlpn01 => challenges.put_alpn(&name, key_auth.digest().as_ref())?,
        }
        challenge
            .set_ready()
            .await
            .with_context(|| format!("the CA refused the {} challenge for {name}", kind.label()))?;
        tracing::info!(domain = %name, challenge = kind.label(), "ACME challenge ready; the CA is validating");
    }
    let status = order
        .poll_ready(&POLL)
        .await
        .context("waiting for the CA to validate")?;
    if status != OrderStatus::Ready {
        return Err(anyhow!(validation_errors(&mut order).await))
            .context(format!("the CA did not validate the order ({status:?})"));
    }
    tracing::info!(domains = ?domains, "ACME challenges validated");
    // A fresh key for every certificate (ECDSA P-256, what rcgen makes by default).
    let key = rcgen::KeyPair::generate().context("certificate key")?;
    let params = rcgen::CertificateParams::new(domains.to_vec()).context("CSR names")?;
    let csr = params.serialize_request(&key).context("CSR")?;
    order
        .finalize_csr(csr.der())
        .await
        .context("the CA refused to finalize the order")?;
    let chain_pem = order
        .poll_certificate(&POLL)
        .await
        .context("waiting for the certificate")?;
    Ok(Issued {
        chain_pem,
        key_pem: key.serialize_pem(),
    })
}

/// The CA's reasons, from the order and each authorization's challenges.
async fn validation_errors(order: &mut instant_acme::Order) -> String {
    let mut why = Vec::new();
    if let Some(p) = &order.state().error {
        why.push(p.to_string());
    }
    let mut authzs = order.authorizations();
    while let Some(Ok(mut a)) = authzs.next().await {
        if let Ok(state) = a.refresh().await {
            for c in &state.challenges {
                if let Some(p) = &c.error {
                    why.push(format!("{}: {p}", state.identifier()));
                }
            }
        }
    }
    if why.is_empty() {
        "no reason given".into()
    } else {
        why.join("; ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn problem_types_are_recognised_through_context() {
        let problem: instant_acme::Problem = serde_json::from_str(
            r#"{"type":"urn:ietf:params:acme:error:rateLimited","detail":"too many","status":429}"#,
        )
        .unwrap();
        let e = anyhow::Error::new(instant_acme::Error::Api(problem))
            .context("the CA refused the order");
        assert!(is_problem(&e, "rateLimited"));
        assert!(!is_problem(&e, "accountDoesNotExist"));
        assert!(!is_problem(&anyhow!("connection refused"), "rateLimited"));
    }
}

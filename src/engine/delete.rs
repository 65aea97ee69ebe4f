//! Removing a file's shares from the grid, and the token that lets a later
//! process do so for an upload that never finished.

use super::cap::CapError;
use super::crypto::FileKey;
use super::{Capability, EngineError, EngineResult, FileCap, ProblemKind, ShareProblem};
use crate::grid::{Grid, GridError};

const TOKEN_PREFIX: &str = "griddav-upload:1:";

/// A string from which [`delete_shares_of_token`] can remove an upload's
/// shares: it holds the key (the servers demand key-derived secrets), so it
/// must be kept as carefully as a capability.
pub fn recovery_token(key: &FileKey) -> String {
    format!("{TOKEN_PREFIX}{}", crate::grid::base32(key.as_bytes()))
}

fn key_of_token(token: &str) -> EngineResult<FileKey> {
    let encoded = token.strip_prefix(TOKEN_PREFIX).ok_or(CapError::Prefix {
        prefix: TOKEN_PREFIX,
    })?;
    let key = super::cap::parse_32(encoded, "recovery token")?;
    Ok(FileKey::from_bytes(key))
}

/// Deletes the shares of the upload a recovery token names, everywhere.
pub async fn delete_shares_of_token(grid: &Grid, token: &str) -> EngineResult<()> {
    if let Some(key) = super::chk::upload::key_of_token(token) {
        return super::chk::upload::delete_chk_shares(grid, &key).await;
    }
    delete_shares(grid, &key_of_token(token)?).await
}

/// Deletes every share of the file with `key` from every server. Fails,
/// naming the servers, if any server could not be asked; deleting shares
/// that are not there is not an error, so a retry is always safe.
///
/// Each server gets its own secrets; a server that refuses them is asked
/// again with the secrets of files written before secrets were per server.
pub async fn delete_shares(grid: &Grid, key: &FileKey) -> EngineResult<()> {
    let si = key.storage_index();
    let results = futures::future::join_all(grid.servers().iter().map(|server| async move {
        match server
            .delete(si, &key.share_secrets(server.identity()))
            .await
        {
            Err(GridError::Refused { .. }) => server.delete(si, &key.legacy_share_secrets()).await,
            other => other,
        }
    }))
    .await;
    deletion_outcome(grid, results)
}

/// `results` of a deletion on each of `grid`'s servers, in their order:
/// every server that failed is named.
pub(super) fn deletion_outcome<T>(
    grid: &Grid,
    results: Vec<Result<T, GridError>>,
) -> EngineResult<()> {
    let problems: Vec<ShareProblem> = grid
        .servers()
        .iter()
        .zip(results)
        .filter_map(|(server, result)| {
            result.err().map(|e| ShareProblem {
                share: None,
                server: server.server_id().to_owned(),
                kind: ProblemKind::of(e),
            })
        })
        .collect();
    if problems.is_empty() {
        Ok(())
    } else {
        Err(EngineError::DeleteIncomplete { problems })
    }
}

/// Deletes the shares of one capability; false if some server could not be
/// asked (the caller may retry). An invalid capability counts as done:
/// nothing could ever free it.
pub async fn free_capability(grid: &Grid, cap: &str) -> bool {
    let cap: FileCap = match cap.parse::<Capability>() {
        Ok(Capability::Griddav(cap)) => cap,
        // Its bytes are in the capability: nothing stored.
        Ok(Capability::Lit(_)) => return true,
        Ok(Capability::Chk(cap)) => {
            return match super::chk::upload::delete_chk_shares(grid, &cap.key).await {
                Ok(()) => true,
                Err(e) => {
                    tracing::warn!(error = %e, "freeing CHK shares failed");
                    false
                }
            }
        }
        Err(e) => {
            // Nothing can be done with it; do not retry it forever.
            tracing::error!(error = %e, "cannot free the shares of an invalid capability; dropped");
            return true;
        }
    };
    match delete_shares(grid, &cap.key).await {
        Ok(()) => true,
        Err(e) => {
            tracing::warn!(error = %e, "freeing shares failed");
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip() {
        let key = FileKey::from_bytes([8; 32]);
        let token = recovery_token(&key);
        assert_eq!(key_of_token(&token).ok(), Some(key));
        assert!(key_of_token("griddav:1:abc").is_err());
        assert!(key_of_token(&token[..token.len() - 2]).is_err());
    }
}

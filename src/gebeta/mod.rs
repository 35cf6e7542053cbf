//! The Gebeta Maps API: a typed, hardened client, its errors, token handling and JWT
//! reading. No Kubernetes types here.
//!
//! - [`client`]: [`GebetaClient`] and its configuration (timeouts, retries, limits);
//! - [`error`]: [`Error`], classified by HTTP status first, with stable labels;
//! - [`token`]: [`Token`], a secret whose `Debug`/`Display` are redacted;
//! - [`jwt`]: reads `exp`/`iat` from an access token without verifying it;
//! - [`wire`]: every [assumed] path and body shape, in one place;
//! - [`model`]: the API's enumerations (shared with the CRDs).

pub mod client;
pub mod endpoint;
pub mod error;
pub mod jwt;
mod limiter;
pub mod model;
mod retry;
pub mod token;
mod types;
pub mod wire;

pub use client::{
    Account, AccountConfig, AccountPatch, ClientConfig, CreatedAccount, GebetaClient,
    RequestObserver, RetryPolicy, TokenPair,
};
pub use error::Error;
pub use jwt::{Claims, JwtError, decode_claims};
pub use model::{AccountState, Platform, Scope};
pub use token::{Token, UserToken};

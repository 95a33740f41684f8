//! Certificates for Ketenhub.
//!
//! Two jobs live here because both are about what a certificate says:
//! [`identity`] reads the Ketenhub identity (OIN, organisation, agency kind,
//! worker, role) out of a verified client certificate, for the hub and the SDK
//! alike; [`dev`] generates a complete development PKI so that the demo, the
//! tests and a newcomer's laptop never need a real PKIoverheid certificate.
//! [`binding`] ties each MLS leaf to the certificate of the identity it
//! names, so that clients need not trust the hub for whose key is whose.
//! [`revocation`] says whether a certificate is still good: its validity period
//! and the revocation lists in force. Beside them, [`private`] creates the owner-only files that private keys
//! (and the SDK's and the hub's secrets) are kept in.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod binding;
pub mod dev;
pub mod identity;
pub mod private;
pub mod revocation;

pub use identity::{fingerprint, identity_and_validity, identity_from_der, CertIdentityError};
pub use time;

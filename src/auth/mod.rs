//! Authentication's machinery: password hashing on fixed threads, access tokens (the
//! verifier and its cache) and refresh tokens, and the throttle that counts failed
//! sign-ins and sign-ups. The accounts use cases (`service::accounts`) put them together.

pub mod password;
pub mod throttle;
pub mod token;

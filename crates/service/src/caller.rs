//! Who a request acts for, and what it may touch.

/// The party a request acts for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// A local, single-tenant deployment (the Hub switched off): full rights
    /// over every collection, addressed by plain names.
    Local,
}

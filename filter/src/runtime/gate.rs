//! Why no `RefCell` borrow is ever held across a host call that can call back into the VM, by
//! construction: such a call (`Host`) and a borrow (`Guarded::with`) both need the callback's one
//! `Gate` by `&mut`, so code that tries both at once does not compile. Only `Quiet` calls reach
//! the host while state is borrowed.
//!
//! A borrow held across a re-entrant call would make the re-entered callback find its state
//! borrowed: a panic, which kills the VM, or a `try_borrow` that silently skips the work.

use std::cell::RefCell;

use super::host::{Host, Quiet};

/// The right to call back into the VM or to borrow runtime state; one per proxy callback,
/// opened by the runtime's entry points only.
pub struct Gate(());

impl Gate {
    pub(super) fn open() -> Self {
        Self(())
    }
}

/// The proxy, as the runtime reaches it.
pub struct Proxy<H> {
    host: H,
}

impl<H: Host> Proxy<H> {
    pub fn new(host: H) -> Self {
        Self { host }
    }

    /// The calls that never re-enter the VM, usable at any time.
    pub fn quiet(&self) -> &impl Quiet {
        &self.host
    }

    /// Every call; while the result is used, no state can be borrowed.
    pub fn reentrant<'g>(&'g self, _gate: &'g mut Gate) -> &'g H {
        &self.host
    }

    #[cfg(test)]
    pub fn host(&self) -> &H {
        &self.host
    }
}

/// State the runtime's callbacks share, borrowed only for the length of a closure that cannot
/// make a re-entrant host call.
#[derive(Default)]
pub struct Guarded<T>(RefCell<T>);

impl<T> Guarded<T> {
    pub fn new(value: T) -> Self {
        Self(RefCell::new(value))
    }

    pub fn with<R>(&self, _gate: &mut Gate, f: impl FnOnce(&mut T) -> R) -> R {
        f(&mut self.0.borrow_mut())
    }
}

//! Tests that measure a bystander flow's round trips (attack tests) must not share the CPU
//! with the other tests of their file: every other test holds this lock shared, a measuring
//! test holds it alone. (Test binaries run one after another, so only the tests of one file
//! can compete for the CPU.)

static CPU: std::sync::RwLock<()> = std::sync::RwLock::new(());

/// Held by a test that may run beside others.
pub fn shared() -> std::sync::RwLockReadGuard<'static, ()> {
    CPU.read().unwrap_or_else(|e| e.into_inner())
}

/// Held by a test that measures round trips: nothing else of its file runs meanwhile.
pub fn whole() -> std::sync::RwLockWriteGuard<'static, ()> {
    CPU.write().unwrap_or_else(|e| e.into_inner())
}

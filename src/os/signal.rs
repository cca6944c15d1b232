//! Stop signals handled on a thread of their own: the signals are blocked
//! in every thread (block them before starting any other thread: a new
//! thread inherits the mask of the one that starts it), and one thread
//! waits for them with sigwait(3) and acts in ordinary code (no
//! async-signal-safety constraints on what it does).

use std::fmt;
use std::io;

/// A set of signal numbers.
#[derive(Clone, Copy)]
pub struct SignalSet {
    set: libc::sigset_t,
}

impl fmt::Debug for SignalSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let members: Vec<libc::c_int> = (1..libc::SIGRTMIN())
            .filter(|&s| self.contains(s))
            .collect();
        f.debug_tuple("SignalSet").field(&members).finish()
    }
}

impl SignalSet {
    /// The set of `signals` (numbers that are not signals are left out).
    pub fn new(signals: &[libc::c_int]) -> Self {
        let mut set = std::mem::MaybeUninit::<libc::sigset_t>::uninit();
        // SAFETY: sigemptyset initialises the whole set it is given (it
        // cannot fail for a valid pointer); sigaddset then only modifies
        // that initialised set (an invalid number fails with EINVAL and
        // changes nothing).
        let set = unsafe {
            libc::sigemptyset(set.as_mut_ptr());
            for &s in signals {
                libc::sigaddset(set.as_mut_ptr(), s);
            }
            set.assume_init()
        };
        Self { set }
    }

    /// Whether `sig` is in the set.
    pub fn contains(&self, sig: libc::c_int) -> bool {
        // SAFETY: `self.set` is an initialised set; sigismember only reads
        // it (an invalid number gives -1).
        unsafe { libc::sigismember(&self.set, sig) == 1 }
    }

    /// Blocks the set in the calling thread, and so in every thread it
    /// starts afterwards.
    pub fn block(&self) -> io::Result<()> {
        // SAFETY: `self.set` is initialised; the old mask is not wanted
        // (null).
        let rc = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &self.set, std::ptr::null_mut()) };
        if rc != 0 {
            return Err(io::Error::from_raw_os_error(rc));
        }
        Ok(())
    }

    /// Unblocks the set in the calling thread.
    pub fn unblock(&self) -> io::Result<()> {
        self.change_mask(libc::SIG_UNBLOCK).map(drop)
    }

    /// Blocks the set in the calling thread and returns the whole mask the
    /// thread had before (to restore with [`SignalSet::set_mask`]).
    pub fn block_saving(&self) -> io::Result<SignalSet> {
        self.change_mask(libc::SIG_BLOCK)
    }

    /// Makes this set the calling thread's whole signal mask.
    pub fn set_mask(&self) -> io::Result<()> {
        self.change_mask(libc::SIG_SETMASK).map(drop)
    }

    fn change_mask(&self, how: libc::c_int) -> io::Result<SignalSet> {
        let mut old = std::mem::MaybeUninit::<libc::sigset_t>::uninit();
        // SAFETY: `self.set` is initialised and `old` has room for one
        // set, which pthread_sigmask fills in whenever it succeeds.
        let rc = unsafe { libc::pthread_sigmask(how, &self.set, old.as_mut_ptr()) };
        if rc != 0 {
            return Err(io::Error::from_raw_os_error(rc));
        }
        // SAFETY: pthread_sigmask succeeded, so it wrote the old mask.
        let set = unsafe { old.assume_init() };
        Ok(Self { set })
    }

    /// Waits until one of the (blocked) signals of the set is pending and
    /// takes it; returns its number.
    pub fn wait(&self) -> io::Result<libc::c_int> {
        let mut sig: libc::c_int = 0;
        // SAFETY: `self.set` is initialised and `sig` is valid for one
        // write.
        let rc = unsafe { libc::sigwait(&self.set, &mut sig) };
        if rc != 0 {
            return Err(io::Error::from_raw_os_error(rc));
        }
        Ok(sig)
    }
}

/// Starts a thread named `name` that waits for the signals of `set`
/// (blocked beforehand with [`SignalSet::block`]) and calls `on_signal`
/// with each one, forever (a failed wait is retried).
pub fn spawn_handler(
    set: SignalSet,
    name: &str,
    mut on_signal: impl FnMut(libc::c_int) + Send + 'static,
) -> io::Result<()> {
    std::thread::Builder::new()
        .name(name.to_owned())
        .spawn(move || loop {
            if let Ok(sig) = set.wait() {
                on_signal(sig);
            }
        })
        .map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_set_holds_its_signals() {
        let s = SignalSet::new(&[libc::SIGTERM, libc::SIGINT, -5]);
        assert!(s.contains(libc::SIGTERM));
        assert!(s.contains(libc::SIGINT));
        assert!(!s.contains(libc::SIGHUP));
        assert!(!s.contains(-5));
    }

    #[test]
    fn test_blocked_signal_is_taken_by_wait() {
        // SIGWINCH: ignored by default, so a stray one cannot kill the
        // test process; blocked in this test's thread only.
        let s = SignalSet::new(&[libc::SIGWINCH]);
        s.block().unwrap();
        // SAFETY: raise sends a signal to the calling thread; blocked, it
        // stays pending until sigwait takes it.
        assert_eq!(unsafe { libc::raise(libc::SIGWINCH) }, 0);
        assert_eq!(s.wait().unwrap(), libc::SIGWINCH);
    }
}

//! Supervisor ↔ worker messages about segments, over a `SOCK_SEQPACKET` pair.
//!
//! A worker that meets an unknown segment id asks for it ([`Message::Need`]); the supervisor
//! answers with the descriptor attached ([`Message::Add`], `SCM_RIGHTS`) or
//! [`Message::Missing`]; when the last handle of a segment is gone it tells workers to unmap it
//! ([`Message::Forget`]). Segments travel as descriptors, never as names another process could
//! race for. One datagram per message: a fixed `#[repr(C)]` record plus at most one descriptor.

use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

use bytemuck::{Pod, Zeroable};
use nix::sys::socket::{recvmsg, sendmsg, ControlMessage, ControlMessageOwned, MsgFlags};

use crate::error::{Error, Result};
use crate::shm::FileArea;

u32_enum! {
/// Operation codes on the wire.
enum Op {
    Need = 1,
    Add = 2,
    Forget = 3,
    Missing = 4,
}
}

/// Bit 0 of [`Wire::flags`]: the segment is a mapped file, not shared memory.
const FLAG_FILE: u32 = 1;
/// Bit 1 of [`Wire::flags`]: the mapped file may be written.
const FLAG_WRITABLE: u32 = 2;

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct Wire {
    op: u32,
    flags: u32,
    id: u64,
    /// File mappings: data offset and length.
    off: u64,
    len: u64,
}

/// A message received from the other end.
#[derive(Debug)]
pub(crate) enum Message {
    /// Worker to supervisor: send me segment `id`.
    Need { id: u64 },
    /// Supervisor to worker: segment `id`, its descriptor, and the file area for mapped files.
    Add { id: u64, fd: OwnedFd, file: Option<FileArea> },
    /// Supervisor to worker: unmap segment `id`.
    Forget { id: u64 },
    /// Supervisor to worker: segment `id` does not exist (any more).
    Missing { id: u64 },
}

fn send(sock: BorrowedFd<'_>, op: Op, id: u64, fd: Option<BorrowedFd<'_>>, file: Option<FileArea>) -> Result<()> {
    let (flags, off, len) = match file {
        Some(a) => (FLAG_FILE | if a.writable { FLAG_WRITABLE } else { 0 }, a.offset as u64, a.len as u64),
        None => (0, 0, 0),
    };
    let w = Wire { op: op as u32, flags, id, off, len };
    send_record(sock, bytemuck::bytes_of(&w), fd)
}

/// Worker to supervisor: send me segment `id`.
pub(crate) fn send_need(sock: BorrowedFd<'_>, id: u64) -> Result<()> {
    send(sock, Op::Need, id, None, None)
}

/// Supervisor to worker: here is segment `id`.
pub(crate) fn send_add(sock: BorrowedFd<'_>, id: u64, fd: BorrowedFd<'_>, file: Option<FileArea>) -> Result<()> {
    send(sock, Op::Add, id, Some(fd), file)
}

/// Supervisor to worker: unmap segment `id`.
pub(crate) fn send_forget(sock: BorrowedFd<'_>, id: u64) -> Result<()> {
    send(sock, Op::Forget, id, None, None)
}

/// Supervisor to worker: segment `id` does not exist.
pub(crate) fn send_missing(sock: BorrowedFd<'_>, id: u64) -> Result<()> {
    send(sock, Op::Missing, id, None, None)
}

/// Receives one message, waiting at most `timeout` (`Duration::ZERO`: do not wait).
/// `Ok(None)` when nothing arrived in time.
///
/// # Errors
///
/// [`Error::Os`] when the peer is gone or the socket fails; [`Error::Protocol`] for a message
/// this build does not know (an unknown operation, `Add` without a descriptor).
pub(crate) fn recv(sock: BorrowedFd<'_>, timeout: Duration) -> Result<Option<Message>> {
    let mut w = Wire::zeroed();
    let Some((_, fd)) = recv_record(sock, bytemuck::bytes_of_mut(&mut w), timeout)? else { return Ok(None) };
    let id = w.id;
    let op = Op::try_from(w.op).map_err(|v| Error::Protocol { what: "operation code", value: u64::from(v) })?;
    Ok(Some(match op {
        Op::Need => Message::Need { id },
        Op::Forget => Message::Forget { id },
        Op::Missing => Message::Missing { id },
        Op::Add => {
            let fd = fd.ok_or(Error::Protocol { what: "segment message without a descriptor", value: id })?;
            let file = (w.flags & FLAG_FILE != 0).then_some(FileArea {
                offset: usize::try_from(w.off).map_err(|_| Error::Protocol { what: "file offset", value: w.off })?,
                len: usize::try_from(w.len).map_err(|_| Error::Protocol { what: "file length", value: w.len })?,
                writable: w.flags & FLAG_WRITABLE != 0,
            });
            Message::Add { id, fd, file }
        }
    }))
}

/// Sends one datagram holding `bytes` and, if given, one descriptor (`SCM_RIGHTS`). Used for
/// the start-up records (`start`) and the fork server's requests (`launch::server`).
///
/// # Errors
///
/// [`Error::Os`] when the peer is gone or the socket fails.
pub(crate) fn send_record(sock: BorrowedFd<'_>, bytes: &[u8], fd: Option<BorrowedFd<'_>>) -> Result<()> {
    let iov = [IoSlice::new(bytes)];
    let raw: [RawFd; 1] = [fd.map(|f| f.as_raw_fd()).unwrap_or(-1)];
    let cmsg = [ControlMessage::ScmRights(&raw)];
    let cmsgs: &[ControlMessage] = if fd.is_some() { &cmsg } else { &[] };
    loop {
        match sendmsg::<()>(sock.as_raw_fd(), &iov, cmsgs, MsgFlags::MSG_NOSIGNAL, None) {
            Ok(_) => return Ok(()),
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(Error::os("sendmsg", e.into())),
        }
    }
}

/// Receives one datagram into `buf`, waiting at most `timeout`: its length and the descriptor
/// that came with it. `Ok(None)` when nothing arrived in time.
///
/// # Errors
///
/// [`Error::Os`] when the socket fails or the peer closed it (`UnexpectedEof`).
pub(crate) fn recv_record(
    sock: BorrowedFd<'_>,
    buf: &mut [u8],
    timeout: Duration,
) -> Result<Option<(usize, Option<OwnedFd>)>> {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    // A signal the program handles may interrupt the wait (EINTR) at any time, on any thread:
    // that is neither a timeout nor a failure, so wait again for what is left of the deadline.
    let deadline = std::time::Instant::now().checked_add(timeout);
    loop {
        let left = deadline.map_or(timeout, |d| d.saturating_duration_since(std::time::Instant::now()));
        let mut pfd = [PollFd::new(sock, PollFlags::POLLIN)];
        let t = PollTimeout::try_from(left).unwrap_or(PollTimeout::MAX);
        match poll(&mut pfd, t) {
            Ok(0) => return Ok(None),
            Ok(_) => break,
            Err(nix::errno::Errno::EINTR) if !left.is_zero() => continue,
            Err(nix::errno::Errno::EINTR) => return Ok(None),
            Err(e) => return Err(Error::os("poll", e.into())),
        }
    }
    let mut cbuf = nix::cmsg_space!([RawFd; 1]);
    let mut fd = None;
    let mut iov = [IoSliceMut::new(buf)];
    let msg = loop {
        // The socket is readable (poll said so) and nothing else reads it, so a retried
        // recvmsg finds the same datagram: EINTR only means a signal came first.
        match recvmsg::<()>(sock.as_raw_fd(), &mut iov, Some(&mut cbuf), MsgFlags::MSG_CMSG_CLOEXEC) {
            Err(nix::errno::Errno::EINTR) => continue,
            r => break r.map_err(|e| Error::os("recvmsg", e.into()))?,
        }
    };
    for c in msg.cmsgs().map_err(|e| Error::os("recvmsg", e.into()))? {
        if let ControlMessageOwned::ScmRights(fds) = c {
            for raw in fds {
                // SAFETY: SCM_RIGHTS installed `raw` as a new descriptor in this process;
                // nothing else owns it (extra ones are closed when `owned` drops).
                let owned = unsafe { OwnedFd::from_raw_fd(raw) };
                fd.get_or_insert(owned);
            }
        }
    }
    if msg.bytes == 0 {
        return Err(Error::os("recvmsg", std::io::Error::from(std::io::ErrorKind::UnexpectedEof)));
    }
    Ok(Some((msg.bytes, fd)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};
    use std::os::fd::AsFd;

    #[test]
    fn messages_round_trip_with_their_descriptor_and_unknown_codes_are_refused() {
        let (a, b) = socketpair(AddressFamily::Unix, SockType::SeqPacket, None, SockFlag::SOCK_CLOEXEC).unwrap();
        send_need(a.as_fd(), 7).unwrap();
        assert!(matches!(recv(b.as_fd(), Duration::from_secs(1)).unwrap(), Some(Message::Need { id: 7 })));
        let file = FileArea { offset: 128, len: 4096, writable: true };
        send_add(b.as_fd(), 9, a.as_fd(), Some(file)).unwrap();
        match recv(a.as_fd(), Duration::from_secs(1)).unwrap() {
            Some(Message::Add { id: 9, file: Some(f), .. }) => assert_eq!(f, file),
            other => panic!("{other:?}"),
        }
        assert!(recv(a.as_fd(), Duration::ZERO).unwrap().is_none());
        let bogus = Wire { op: 99, flags: 0, id: 1, off: 0, len: 0 };
        nix::sys::socket::send(a.as_raw_fd(), bytemuck::bytes_of(&bogus), MsgFlags::empty()).unwrap();
        assert!(matches!(recv(b.as_fd(), Duration::from_secs(1)), Err(Error::Protocol { value: 99, .. })));
    }
}

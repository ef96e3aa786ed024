//! The fork server's records: one fixed-size [`Wire`] per message, on `SOCK_SEQPACKET`
//! sockets, with at most one descriptor attached (`SCM_RIGHTS`).

use std::os::fd::{BorrowedFd, OwnedFd};
use std::time::Duration;

use bytemuck::{Pod, Zeroable};

use crate::error::{Error, Result};
use crate::ipc::{recv_record, send_record};

u32_enum! {
/// Fork-server operations.
pub(super) enum Op {
    /// Program → server (control socket): a new connection, its socket attached.
    Connect = 1,
    /// Pool → server: fork a worker, its socket attached.
    Fork = 2,
    /// Server → pool: the worker's pid.
    Forked = 3,
    /// Server → pool: fork failed with errno `value`.
    Failed = 4,
    /// Server → pool: worker `pid` exited with raw wait status `value`.
    Exited = 5,
}
}

/// One record: an operation, a pid and a value (an errno, a wait status), 16 bytes.
#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
pub(super) struct Wire {
    pub(super) op: u32,
    pub(super) pid: i32,
    pub(super) value: i64,
}

/// Sends one record on `sock`, `fd` attached.
pub(super) fn send(sock: BorrowedFd<'_>, op: Op, pid: i32, value: i64, fd: Option<BorrowedFd<'_>>) -> Result<()> {
    send_record(sock, bytemuck::bytes_of(&Wire { op: op as u32, pid, value }), fd)
}

/// Receives one record (`None`: nothing within `timeout`).
pub(super) fn recv(sock: BorrowedFd<'_>, timeout: Duration) -> Result<Option<(Op, Wire, Option<OwnedFd>)>> {
    let mut w = Wire::zeroed();
    let Some((n, fd)) = recv_record(sock, bytemuck::bytes_of_mut(&mut w), timeout)? else { return Ok(None) };
    if n != std::mem::size_of::<Wire>() {
        return Err(Error::Protocol { what: "fork server record length", value: n as u64 });
    }
    let op = Op::try_from(w.op).map_err(|v| Error::Protocol { what: "fork server operation", value: v.into() })?;
    Ok(Some((op, w, fd)))
}

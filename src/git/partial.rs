//! Partial fetch and a push of only what changed, for servers that offer it (GitHub,
//! GitLab: git's protocol version 2 with `filter`). A promotion reads a handful of files
//! and writes one; fetching the whole tip tree makes its time and memory grow with the
//! repository. Here the tip's commit comes with its root tree only (`filter tree:1`,
//! `deepen 1`), each tree or file is fetched when it is first read (the tree with the
//! files directly in it), every pack is streamed into the scratch repository's object
//! database as it arrives, and the push sends the new commit, the trees on the changed
//! paths and the new files: nothing of the rest of the repository is walked or sent.
//! A retry after a lost race fetches the new tip's commit and root tree, and then only
//! the trees that changed on the paths it reads. Servers without `filter` get libgit2's
//! depth-1 fetch (see [`super::Workspace`]).

use std::io::{self, Read, Write};

use git2::transport::Service;
use git2::{Oid, Repository};

use super::http::{self, Failed, HttpTransport};

/// Flush, delimiter: git's special pkt-lines.
const FLUSH: &[u8] = b"0000";
const DELIM: &[u8] = b"0001";

/// What `git-receive-pack` answered to our push.
pub(super) enum Pushed {
    Ok,
    /// `ng <ref> <reason>`: refused by the server (the branch moved, a hook said no).
    Refused {
        reason: String,
        server_said: Vec<u8>,
    },
    /// The advertised branch is no longer the commit we built on: nothing was sent.
    Moved,
}

/// The smart-HTTP conversation with one repository URL.
pub(super) struct Remote<'a> {
    pub transport: &'a HttpTransport,
    pub url: &'a str,
    pub agent: &'a str,
}

/// What a server's protocol-v2 capabilities offer us.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Offer {
    /// Protocol version 2 with `ls-refs` and a `fetch` that takes `filter`, for SHA-1.
    pub partial: bool,
    /// `fetch` takes `want-ref` (`uploadpack.allowRefInWant`: GitLab, not GitHub): the
    /// branch's tip comes in the fetch of its commit, with no `ls-refs` before it.
    pub ref_in_want: bool,
}

impl Remote<'_> {
    /// What the server offers of partial fetch.
    pub fn offer(&self) -> Result<Offer, Failed> {
        self.transport.run(|| {
            let mut stream = http::exchange(self.url, Service::UploadPackLs, true)?;
            let lines = read_pkt_lines(&mut stream).map_err(net)?;
            let mut v2 = false;
            let mut filter = false;
            let mut ref_in_want = false;
            let mut ls_refs = false;
            let mut sha1 = true;
            for line in &lines {
                let line = String::from_utf8_lossy(line);
                let line = line.trim_end();
                match line.split_once('=') {
                    _ if line == "version 2" => v2 = true,
                    Some(("fetch", features)) => {
                        filter = features.split(' ').any(|f| f == "filter");
                        ref_in_want = features.split(' ').any(|f| f == "ref-in-want");
                    }
                    Some(("ls-refs", _)) => ls_refs = true,
                    Some(("object-format", format)) => sha1 = format == "sha1",
                    _ if line == "ls-refs" => ls_refs = true,
                    _ => {}
                }
            }
            let partial = v2 && filter && ls_refs && sha1;
            Ok(Offer {
                partial,
                ref_in_want: partial && ref_in_want,
            })
        })
    }

    /// The tip of `refs/heads/<branch>` fetched by name (`want-ref`), cut from its
    /// history, with its root tree only; `None` when the server knows no such branch.
    pub fn fetch_branch(&self, repo: &Repository, branch: &str) -> Result<Option<Oid>, Failed> {
        let refname = format!("refs/heads/{branch}");
        self.transport.run(|| {
            let mut stream = http::exchange(self.url, Service::UploadPack, true)?;
            let mut body = Vec::new();
            pkt(&mut body, b"command=fetch\n");
            pkt(&mut body, format!("agent={}\n", self.agent).as_bytes());
            body.extend_from_slice(DELIM);
            pkt(&mut body, format!("want-ref {refname}\n").as_bytes());
            for arg in [
                "deepen 1\n",
                "ofs-delta\n",
                "no-progress\n",
                "filter tree:1\n",
                "done\n",
            ] {
                pkt(&mut body, arg.as_bytes());
            }
            body.extend_from_slice(FLUSH);
            stream.write_all(&body).map_err(net)?;
            let mut tip = None;
            let mut buf = Vec::new();
            loop {
                match read_pkt(&mut stream, &mut buf) {
                    Ok(Some(_)) if buf.starts_with(b"packfile") => break,
                    Ok(Some(_)) => {
                        let line = String::from_utf8_lossy(&buf);
                        let line = line.trim_end();
                        // upload-pack's answer to a branch it does not have.
                        if line.strip_prefix("ERR unknown ref ") == Some(refname.as_str()) {
                            return Ok(None);
                        }
                        if let Some(error) = line.strip_prefix("ERR ") {
                            return Err(git2::Error::from_str(&format!(
                                "the git server said: {error}"
                            )));
                        }
                        if let Some((id, name)) = line.split_once(' ')
                            && name == refname
                        {
                            tip = Some(Oid::from_str(id)?);
                        }
                    }
                    Ok(None) => {}
                    Err(e) => return Err(net(e)),
                }
            }
            let Some(tip) = tip else {
                return Err(git2::Error::from_str(
                    "the server's answer to want-ref names no commit for the branch",
                ));
            };
            unpack(&mut stream, repo)?;
            Ok(Some(tip))
        })
    }

    /// The commit `refs/heads/<branch>` points at, if the branch exists.
    pub fn branch_tip(&self, branch: &str) -> Result<Option<Oid>, Failed> {
        let refname = format!("refs/heads/{branch}");
        self.transport.run(|| {
            let mut stream = http::exchange(self.url, Service::UploadPack, true)?;
            let mut body = Vec::new();
            pkt(&mut body, b"command=ls-refs\n");
            pkt(&mut body, format!("agent={}\n", self.agent).as_bytes());
            body.extend_from_slice(DELIM);
            pkt(&mut body, format!("ref-prefix {refname}\n").as_bytes());
            body.extend_from_slice(FLUSH);
            stream.write_all(&body).map_err(net)?;
            for line in read_pkt_lines(&mut stream).map_err(net)? {
                let line = String::from_utf8_lossy(&line);
                let mut words = line.trim_end().split(' ');
                if let (Some(id), Some(name)) = (words.next(), words.next())
                    && name == refname
                {
                    return Oid::from_str(id).map(Some);
                }
            }
            Ok(None)
        })
    }

    /// Fetches `wants` with what lies within `depth` levels below each (`filter
    /// tree:<depth>`: 1 brings a wanted tree's files and the listings of its directories;
    /// a wanted commit comes with its root tree only), streaming the pack into `repo`'s
    /// objects. `shallow` cuts a wanted commit from its history.
    pub fn fetch(
        &self,
        repo: &Repository,
        wants: &[Oid],
        depth: usize,
        shallow: bool,
    ) -> Result<(), Failed> {
        self.transport.run(|| {
            let mut stream = http::exchange(self.url, Service::UploadPack, true)?;
            let mut body = Vec::new();
            pkt(&mut body, b"command=fetch\n");
            pkt(&mut body, format!("agent={}\n", self.agent).as_bytes());
            body.extend_from_slice(DELIM);
            for want in wants {
                pkt(&mut body, format!("want {want}\n").as_bytes());
            }
            if shallow {
                pkt(&mut body, b"deepen 1\n");
            }
            pkt(&mut body, b"ofs-delta\n");
            pkt(&mut body, b"no-progress\n");
            pkt(&mut body, format!("filter tree:{depth}\n").as_bytes());
            pkt(&mut body, b"done\n");
            body.extend_from_slice(FLUSH);
            stream.write_all(&body).map_err(net)?;
            receive_pack(&mut stream, repo)
        })
    }

    /// Pushes `new` onto `refs/heads/<branch>` if it still is `old` (`None`: whatever it
    /// is, or a new branch), sending `objects` (the new commit and the trees and files it
    /// adds) as one pack.
    pub fn push(
        &self,
        repo: &Repository,
        branch: &str,
        old: Option<Oid>,
        new: Oid,
        objects: &[Oid],
    ) -> Result<Pushed, Failed> {
        let refname = format!("refs/heads/{branch}");
        self.transport.run(|| {
            let mut stream = http::exchange(self.url, Service::ReceivePackLs, false)?;
            let lines = read_pkt_lines(&mut stream).map_err(net)?;
            drop(stream);
            let mut advertised = None;
            let mut capabilities = String::new();
            for line in &lines {
                let (head, caps) = match line.iter().position(|&b| b == 0) {
                    Some(nul) => (&line[..nul], Some(&line[nul + 1..])),
                    None => (&line[..], None),
                };
                if let Some(caps) = caps {
                    capabilities = String::from_utf8_lossy(caps).trim_end().to_string();
                }
                let head = String::from_utf8_lossy(head);
                let mut words = head.trim_end().split(' ');
                if let (Some(id), Some(name)) = (words.next(), words.next())
                    && name == refname
                {
                    advertised = Some(Oid::from_str(id)?);
                }
            }
            let old = match old {
                Some(old) if advertised != Some(old) => return Ok(Pushed::Moved),
                Some(old) => old,
                None => advertised.unwrap_or(Oid::ZERO_SHA1),
            };
            let has = |c: &str| capabilities.split(' ').any(|x| x == c);
            let sideband = has("side-band-64k");
            let mut wanted = String::from("report-status");
            if sideband {
                wanted.push_str(" side-band-64k");
            }
            wanted.push_str(&format!(" agent={}", self.agent));
            let mut body = Vec::new();
            pkt(
                &mut body,
                format!("{old} {new} {refname}\0{wanted}\n").as_bytes(),
            );
            body.extend_from_slice(FLUSH);
            let mut builder = repo.packbuilder()?;
            for id in objects {
                builder.insert_object(*id, None)?;
            }
            let mut pack = git2::Buf::new();
            builder.write_buf(&mut pack)?;
            body.extend_from_slice(&pack);
            let mut stream = http::exchange(self.url, Service::ReceivePack, false)?;
            stream.write_all(&body).map_err(net)?;
            let (status, server_said) = if sideband {
                let mut status = Vec::new();
                let mut said = Vec::new();
                demux(&mut stream, &mut status, &mut said).map_err(net)?;
                (read_pkt_lines(&mut status.as_slice()).map_err(net)?, said)
            } else {
                (read_pkt_lines(&mut stream).map_err(net)?, Vec::new())
            };
            let mut unpack = None;
            let mut outcome = None;
            for line in status {
                let line = String::from_utf8_lossy(&line).trim_end().to_string();
                if let Some(result) = line.strip_prefix("unpack ") {
                    unpack = Some(result.to_string());
                } else if line.strip_prefix("ok ") == Some(refname.as_str()) {
                    outcome = Some(Pushed::Ok);
                } else if let Some(rest) = line.strip_prefix("ng ")
                    && let Some(reason) = rest.strip_prefix(refname.as_str())
                {
                    outcome = Some(Pushed::Refused {
                        reason: reason.trim().to_string(),
                        server_said: server_said.clone(),
                    });
                }
            }
            match (unpack.as_deref(), outcome) {
                (Some("ok"), Some(outcome)) => Ok(outcome),
                (Some(error), _) if error != "ok" => Err(git2::Error::from_str(&format!(
                    "the server could not unpack the pushed objects: {error}"
                ))),
                _ => Err(git2::Error::from_str(
                    "the server's answer to the push has no status for the branch",
                )),
            }
        })
    }
}

/// Our requests' failures as libgit2's, so that [`HttpTransport::run`] pairs them with
/// what the transport recorded, as for libgit2's own requests.
#[allow(clippy::needless_pass_by_value)] // Passed as `map_err(net)`.
fn net(e: io::Error) -> git2::Error {
    git2::Error::new(
        git2::ErrorCode::GenericError,
        git2::ErrorClass::Net,
        e.to_string(),
    )
}

/// Appends one pkt-line.
fn pkt(out: &mut Vec<u8>, data: &[u8]) {
    out.extend_from_slice(format!("{:04x}", data.len() + 4).as_bytes());
    out.extend_from_slice(data);
}

/// One pkt-line: `None` for a flush, delimiter or response-end, else its data.
fn read_pkt(input: &mut impl Read, buf: &mut Vec<u8>) -> io::Result<Option<usize>> {
    let mut len = [0u8; 4];
    input.read_exact(&mut len)?;
    let len = std::str::from_utf8(&len)
        .ok()
        .and_then(|l| usize::from_str_radix(l, 16).ok())
        .ok_or_else(|| io::Error::other("the git server sent a malformed pkt-line"))?;
    if len < 4 {
        return Ok(None);
    }
    buf.resize(len - 4, 0);
    input.read_exact(buf)?;
    Ok(Some(len - 4))
}

/// Every pkt-line up to the end of the answer (its last flush), skipping the `# service=`
/// header of an `info/refs` answer. Section markers are dropped.
fn read_pkt_lines(input: &mut impl Read) -> io::Result<Vec<Vec<u8>>> {
    let mut lines = Vec::new();
    let mut buf = Vec::new();
    loop {
        match read_pkt(input, &mut buf) {
            Ok(Some(_)) => {
                if !buf.starts_with(b"# service=") {
                    lines.push(buf.clone());
                }
            }
            Ok(None) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(lines),
            Err(e) => return Err(e),
        }
    }
}

/// Splits a side-band answer: band 1 into `data`, band 2 (progress) into `said`; band 3
/// is the server's fatal error. Ends at the flush.
fn demux(input: &mut impl Read, data: &mut impl Write, said: &mut Vec<u8>) -> io::Result<()> {
    let mut buf = Vec::with_capacity(65520);
    loop {
        match read_pkt(input, &mut buf)? {
            None => return Ok(()),
            Some(0) => {}
            Some(_) => match buf[0] {
                1 => data.write_all(&buf[1..])?,
                2 => said.extend_from_slice(&buf[1..]),
                3 => {
                    return Err(io::Error::other(format!(
                        "the git server said: {}",
                        String::from_utf8_lossy(&buf[1..]).trim_end()
                    )));
                }
                _ => {}
            },
        }
    }
}

/// Reads a `fetch` answer (an optional `shallow-info` section, then `packfile`) and streams
/// the pack into the object database, which indexes it as it arrives.
fn receive_pack(input: &mut impl Read, repo: &Repository) -> Result<(), git2::Error> {
    let mut buf = Vec::new();
    loop {
        match read_pkt(input, &mut buf).map_err(net)? {
            Some(_) if buf.starts_with(b"packfile") => break,
            Some(_) | None => {}
        }
    }
    unpack(input, repo)
}

/// Streams a `fetch` answer's packfile section into the object database.
fn unpack(input: &mut impl Read, repo: &Repository) -> Result<(), git2::Error> {
    let odb = repo.odb()?;
    let mut writer = odb.packwriter()?;
    let mut said = Vec::new();
    demux(input, &mut writer, &mut said).map_err(net)?;
    writer.commit()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pkt_lines_round_trip_and_skip_the_service_header() {
        let mut out = Vec::new();
        pkt(&mut out, b"# service=git-upload-pack\n");
        out.extend_from_slice(FLUSH);
        pkt(&mut out, b"version 2\n");
        pkt(&mut out, b"fetch=shallow filter\n");
        out.extend_from_slice(FLUSH);
        assert_eq!(&out[..4], b"001e");
        let lines = read_pkt_lines(&mut out.as_slice()).unwrap();
        assert_eq!(
            lines,
            vec![b"version 2\n".to_vec(), b"fetch=shallow filter\n".to_vec()]
        );
    }

    #[test]
    fn side_band_splits_data_from_progress_and_fails_on_band_3() {
        let mut input = Vec::new();
        pkt(&mut input, b"\x01PACK");
        pkt(&mut input, b"\x02counting objects\n");
        pkt(&mut input, b"\x01data");
        input.extend_from_slice(FLUSH);
        let (mut data, mut said) = (Vec::new(), Vec::new());
        demux(&mut input.as_slice(), &mut data, &mut said).unwrap();
        assert_eq!(data, b"PACKdata");
        assert_eq!(said, b"counting objects\n");

        let mut input = Vec::new();
        pkt(&mut input, b"\x03access denied\n");
        let err = demux(&mut input.as_slice(), &mut data, &mut said).unwrap_err();
        assert_eq!(err.to_string(), "the git server said: access denied");
    }
}

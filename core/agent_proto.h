/*
 * The wire protocol between the host and smx-init, the guest agent
 * (tools/smx-init).  Shared by both sides; plain C, no dependencies.
 *
 * Transport: virtio-vsock streams.  The agent listens on guest port
 * AGENT_PORT; every host connection carries one request.  At boot the
 * agent connects to host port AGENT_READY_PORT and sends one A_HELLO
 * frame: the host knows the guest is ready.  After a restore the agent
 * does nothing by itself (snapshots are taken once it is ready, and its
 * listener survives the vsock transport reset): the host connects to
 * AGENT_PORT and sends A_FIXUP, whose A_OK tells it the clone is ready.
 *
 * Framing: every message is a frame, an 8-byte header (type, length,
 * both little-endian uint32) and `length` payload bytes, at most
 * AGENT_MAX_FRAME.  A peer that receives an unknown type, an oversize
 * length or a frame out of order closes the connection.
 *
 * Request payloads (and some replies) are field lists: a sequence of
 * NUL-terminated "key=value" strings.  Keys may repeat where noted
 * (arg, env); unknown keys are ignored so either side may add fields.
 *
 * Requests (the first frame of a connection, host -> agent):
 *
 *   A_EXEC	arg= (repeated, argv[0] first; resolved in PATH of the
 *		given env), env= (repeated, KEY=VALUE; the image's Env is
 *		the host's business), cwd=, user= (uid[:gid] or
 *		name[:group], resolved in the guest's /etc/passwd and
 *		/etc/group; default 0:0), tty=1 (a pty; stderr is merged
 *		into stdout), rows=, cols=, main=1 (the container's main
 *		process: A_KILL reaches it), timeout_ms= (SIGKILL after).
 *		Agent -> host: A_STARTED (field pid=), then A_STDOUT and
 *		A_STDERR data, then A_EXIT (fields exit=N or signal=N)
 *		once the process has ended and its output is drained.
 *		Host -> agent meanwhile: A_STDIN data, A_STDIN_EOF,
 *		A_SIGNAL (field signal=N, to the process), A_RESIZE
 *		(rows=, cols=).  A host that closes the connection kills
 *		the process (SIGKILL) unless main=1.
 *   A_PUT	path=, mode= (octal), uid=, gid=: then A_DATA frames and
 *		one A_DATA_EOF from the host; the agent writes to a
 *		temporary file beside path, renames it in and answers
 *		A_OK.
 *   A_GET	path=: the agent answers A_OK (fields mode= octal,
 *		size=) then A_DATA frames and A_DATA_EOF.
 *   A_CONNECT	port= (guest TCP port on 127.0.0.1): the agent answers
 *		A_OK once connected; from then on the vsock stream carries
 *		raw bytes both ways (no more frames) until either side
 *		closes.
 *   A_KILL	signal=N: to the main process (A_ERROR when none runs).
 *		Answers A_OK.
 *   A_FIXUP	time_ns= (CLOCK_REALTIME), entropy= (hex, at most 256
 *		bytes: RNDADDENTROPY then RNDRESEEDCRNG), hostname=: after
 *		a restore.  Answers A_OK.
 *   A_POWEROFF	sync, SIGTERM then SIGKILL every process, power off.
 *		Answers A_OK first.
 *   A_PING	answers A_OK.
 *
 * Any request may be answered A_ERROR (field msg=, a one-line reason,
 * and err= an errno number where one applies) and the connection
 * closed.  Paths (cwd, A_PUT, A_GET) are inside the container's root.
 *
 * A_HELLO fields: version= (AGENT_VERSION), kernel= (uname release).
 */
#ifndef SMX_AGENT_PROTO_H
#define SMX_AGENT_PROTO_H

#include <stdint.h>

#define AGENT_VERSION		1
#define AGENT_PORT		1024	/* the agent listens here */
#define AGENT_READY_PORT	1025	/* the host listens here */
#define AGENT_MAX_FRAME		(1024 * 1024)
#define AGENT_HDR_LEN		8

enum agent_type {
	/* requests */
	A_EXEC = 1,
	A_PUT,
	A_GET,
	A_CONNECT,
	A_KILL,
	A_FIXUP,
	A_POWEROFF,
	A_PING,
	/* stream and replies */
	A_HELLO = 32,
	A_OK,
	A_ERROR,
	A_STARTED,
	A_STDIN,
	A_STDIN_EOF,
	A_STDOUT,
	A_STDERR,
	A_SIGNAL,
	A_RESIZE,
	A_EXIT,
	A_DATA,
	A_DATA_EOF,
};

struct agent_hdr {
	uint32_t	type;	/* little-endian */
	uint32_t	len;	/* little-endian, <= AGENT_MAX_FRAME */
};

#endif /* SMX_AGENT_PROTO_H */

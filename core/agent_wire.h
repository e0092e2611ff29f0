/*
 * Frame and field-list codec of the host <-> smx-init protocol
 * (core/agent_proto.h).  Plain C, libc only: the static guest agent
 * compiles this file too.
 */
#ifndef SMX_AGENT_WIRE_H
#define SMX_AGENT_WIRE_H

#include <stddef.h>
#include <stdint.h>

#include "agent_proto.h"

/*
 * Write one frame (header + payload) to fd, a blocking stream, retrying
 * on EINTR and short writes.  len must be <= AGENT_MAX_FRAME.  Returns 0
 * or -errno (-EMSGSIZE when len is too large).  On a nonblocking fd an
 * -EAGAIN may come after part of the frame went out: callers that
 * cannot block queue frames themselves.
 */
int	agent_write_frame(int fd, uint32_t type, const void *payload,
	    size_t len) __attribute__((warn_unused_result));

/*
 * Read one frame from fd, blocking, retrying on EINTR.  On success
 * *payload is malloc'd (free it), NUL-terminated one byte beyond *len
 * (even when *len is 0), and 0 is returned.  Returns -EPIPE at a clean
 * EOF before the header, -EPROTO on a truncated frame or a length above
 * AGENT_MAX_FRAME, -ENOMEM, or another -errno from read(2).
 */
int	agent_read_frame(int fd, uint32_t *type, void **payload,
	    size_t *len) __attribute__((warn_unused_result));

/* A field list being built: zero-initialise, add, send buf/len, free. */
struct agent_fields {
	char	*buf;
	size_t	 len, cap;
};

/*
 * Append "key=value\0" with value formatted printf-style.  Aborts the
 * process on allocation failure (both sides treat OOM as fatal).
 */
void	agent_fields_add(struct agent_fields *f, const char *key,
	    const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* Free the buffer and zero the struct (reusable afterwards). */
void	agent_fields_free(struct agent_fields *f);

/*
 * The value of the first "key=" field in payload[0..len), or NULL.  The
 * returned string is NUL-terminated inside the payload provided the
 * payload comes from agent_read_frame (a last field missing its NUL is
 * terminated by the extra byte agent_read_frame adds).
 */
const char *agent_field(const void *payload, size_t len, const char *key);

/*
 * Iterate a repeated key: prev is NULL for the first value, else a value
 * returned by the previous call.  Returns NULL after the last.
 */
const char *agent_field_next(const void *payload, size_t len,
	    const char *key, const char *prev);

#endif /* SMX_AGENT_WIRE_H */

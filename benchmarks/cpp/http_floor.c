/* The least any HTTP/1.1 keep-alive server does per request, as a floor to set a served
 * model's per-request cost against: one thread, epoll, every request read whole (its headers
 * and its Content-Length body) into a bounded buffer per connection, then one fixed response
 * written back. No model and no parsing beyond the request's framing.
 *
 * Usage: http_floor PORT RESPONSE_FILE [MAX_BODY_BYTES [PACE_US]]
 *   RESPONSE_FILE holds the whole response (status line, headers, body) sent to every request.
 *   Prints the port it listens on (PORT 0: a free one) on 127.0.0.1, then serves until SIGTERM.
 *   PACE_US > 0 holds the answers and writes them all every PACE_US microseconds, as a batching
 *   server answers a batch at once: N closed-loop clients then send N / PACE requests a second,
 *   so the floor's and the client's CPU per request are measured at a chosen rate.
 * Pipelined requests are answered in order; a body may arrive in any number of reads. A
 * Content-Length past MAX_BODY_BYTES (default 1 MiB) gets 413, headers past 16 KiB 431, a
 * chunked body 501, a malformed request 400; each then closes its connection. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <sys/uio.h>
#include <unistd.h>

#define MAX_HEADER 16384
#define MAX_OWED 16       /* answers queued per connection before it stops parsing */
#define MAX_RESPONSE (1 << 20)

enum { WATCH_IN, WATCH_OUT, WATCH_NONE };

typedef struct {
  int fd;
  char* in;           /* MAX_HEADER + max_body bytes: one whole request always fits */
  size_t len;         /* bytes held */
  size_t scanned;     /* bytes already searched for the header's end */
  size_t header_len;  /* 0 while the header is incomplete */
  size_t body_len;
  size_t owed;        /* fixed responses not yet fully written */
  size_t out_off;     /* bytes of the first owed response already written */
  const char* tail;   /* an error response written after the owed ones, then close */
  size_t tail_len, tail_off;
  int close_after;    /* close once everything owed is written */
  int peer_done;      /* the client closed its side */
  int watching;       /* WATCH_IN, WATCH_OUT (a write to finish) or WATCH_NONE (paced) */
} Conn;

static char* response;
static size_t response_len;
static size_t max_body = 1 << 20;
static long pace_us = 0; /* 0: answer at once */
static Conn** conns;
static size_t conns_cap;
static volatile sig_atomic_t stopping = 0;

#define REFUSAL(code, text) \
  "HTTP/1.1 " code "\r\nContent-Type: text/plain\r\nConnection: close\r\nContent-Length: " \
  text "\r\n\r\n"
static const char BAD_REQUEST[] = REFUSAL("400 Bad Request", "12") "bad request\n";
static const char TOO_LARGE[] = REFUSAL("413 Content Too Large", "23") "content-length too big\n";
static const char HEADER_TOO_LARGE[] =
    REFUSAL("431 Request Header Fields Too Large", "18") "header too large\n";
static const char NOT_IMPLEMENTED[] =
    REFUSAL("501 Not Implemented", "26") "transfer-encoding refused\n";

static void on_signal(int sig) {
  (void)sig;
  stopping = 1;
}

static void refuse(Conn* c, const char* text, size_t len) {
  c->tail = text;
  c->tail_len = len;
  c->tail_off = 0;
  c->close_after = 1;
  c->len = 0; /* what follows a refused request is not read */
}

/* The header's value after "name:", its surrounding blanks dropped. */
static int header_value(const char* line, const char* end, const char* name, const char** value,
                        size_t* value_len) {
  size_t n = strlen(name);
  if ((size_t)(end - line) <= n || strncasecmp(line, name, n) != 0 || line[n] != ':') return 0;
  const char* v = line + n + 1;
  while (v < end && (*v == ' ' || *v == '\t')) ++v;
  const char* e = end;
  while (e > v && (e[-1] == ' ' || e[-1] == '\t')) --e;
  *value = v;
  *value_len = (size_t)(e - v);
  return 1;
}

/* Reads the framing of the header held in c->in[0, header_len): 0, or -1 once refused. */
static int parse_header(Conn* c) {
  const char* p = c->in;
  const char* end = c->in + c->header_len - 2; /* the blank line's CRLF */
  const char* eol = memmem(p, (size_t)(end - p), "\r\n", 2);
  if (eol == NULL || eol == p || memmem(p, (size_t)(eol - p), " HTTP/1.", 8) == NULL) {
    refuse(c, BAD_REQUEST, sizeof BAD_REQUEST - 1);
    return -1;
  }
  if (memmem(p, (size_t)(eol - p), " HTTP/1.0", 9) != NULL) c->close_after = 1;
  int has_length = 0;
  c->body_len = 0;
  for (p = eol + 2; p < end; p = eol + 2) {
    eol = memmem(p, (size_t)(end - p), "\r\n", 2);
    if (eol == NULL) break; /* cannot happen: the last line ends at end - 2 */
    /* RFC 9112 5.1-5.2: a field name is a token followed at once by ':' (a blank before the
       colon, or a line folded onto the one before, would frame the body differently from a
       proxy in front). */
    const char* colon = memchr(p, ':', (size_t)(eol - p));
    if (colon == NULL || colon == p || memchr(p, ' ', (size_t)(colon - p)) != NULL ||
        memchr(p, '\t', (size_t)(colon - p)) != NULL) {
      refuse(c, BAD_REQUEST, sizeof BAD_REQUEST - 1);
      return -1;
    }
    const char* v;
    size_t vlen;
    if (header_value(p, eol, "content-length", &v, &vlen)) {
      if (vlen == 0 || vlen > 18) {
        if (vlen > 18 && strspn(v, "0123456789") >= vlen) {
          refuse(c, TOO_LARGE, sizeof TOO_LARGE - 1);
        } else {
          refuse(c, BAD_REQUEST, sizeof BAD_REQUEST - 1);
        }
        return -1;
      }
      size_t n = 0;
      for (size_t i = 0; i < vlen; ++i) {
        if (v[i] < '0' || v[i] > '9') {
          refuse(c, BAD_REQUEST, sizeof BAD_REQUEST - 1);
          return -1;
        }
        n = n * 10 + (size_t)(v[i] - '0');
      }
      if (has_length && n != c->body_len) { /* two lengths that disagree: smuggling */
        refuse(c, BAD_REQUEST, sizeof BAD_REQUEST - 1);
        return -1;
      }
      has_length = 1;
      c->body_len = n;
    } else if (header_value(p, eol, "transfer-encoding", &v, &vlen)) {
      refuse(c, NOT_IMPLEMENTED, sizeof NOT_IMPLEMENTED - 1);
      return -1;
    } else if (header_value(p, eol, "connection", &v, &vlen) && vlen == 5 &&
               strncasecmp(v, "close", 5) == 0) {
      c->close_after = 1;
    }
  }
  if (c->body_len > max_body) {
    refuse(c, TOO_LARGE, sizeof TOO_LARGE - 1);
    return -1;
  }
  return 0;
}

/* Takes every whole request held, up to MAX_OWED answers queued: 1 if one stopped it there. */
static int take_requests(Conn* c) {
  while (!c->close_after && c->tail == NULL) {
    if (c->owed >= MAX_OWED) return 1;
    if (c->header_len == 0) {
      size_t from = c->scanned > 3 ? c->scanned - 3 : 0;
      const char* end = memmem(c->in + from, c->len - from, "\r\n\r\n", 4);
      if (end == NULL) {
        c->scanned = c->len;
        if (c->len >= MAX_HEADER) refuse(c, HEADER_TOO_LARGE, sizeof HEADER_TOO_LARGE - 1);
        return 0;
      }
      c->header_len = (size_t)(end - c->in) + 4;
      if (c->header_len > MAX_HEADER) {
        refuse(c, HEADER_TOO_LARGE, sizeof HEADER_TOO_LARGE - 1);
        return 0;
      }
      if (parse_header(c) != 0) return 0;
    }
    size_t total = c->header_len + c->body_len;
    if (c->len < total) return 0;
    c->owed++;
    memmove(c->in, c->in + total, c->len - total); /* a pipelined next request */
    c->len -= total;
    c->header_len = c->scanned = 0;
  }
  return 0;
}

/* Writes what is owed: 1 all of it, 0 the socket is full, -1 the connection failed. */
static int flush(Conn* c) {
  while (c->owed > 0) {
    struct iovec iov[MAX_OWED];
    int k = 0;
    for (size_t i = 0; i < c->owed && k < MAX_OWED; ++i, ++k) {
      size_t skip = i == 0 ? c->out_off : 0;
      iov[k].iov_base = response + skip;
      iov[k].iov_len = response_len - skip;
    }
    ssize_t n = k == 1 ? write(c->fd, iov[0].iov_base, iov[0].iov_len) : writev(c->fd, iov, k);
    if (n < 0) return errno == EAGAIN || errno == EWOULDBLOCK ? 0 : -1;
    size_t done = (size_t)n + c->out_off;
    c->owed -= done / response_len;
    c->out_off = done % response_len;
  }
  while (c->tail != NULL && c->tail_off < c->tail_len) {
    ssize_t n = write(c->fd, c->tail + c->tail_off, c->tail_len - c->tail_off);
    if (n < 0) return errno == EAGAIN || errno == EWOULDBLOCK ? 0 : -1;
    c->tail_off += (size_t)n;
  }
  return 1;
}

static void close_conn(int epfd, Conn* c) {
  epoll_ctl(epfd, EPOLL_CTL_DEL, c->fd, NULL);
  /* Unread input would make close() reset the connection, and a reset can discard the
   * answer (a refusal) still on its way: what has arrived is read first, a bounded amount. */
  char sink[4096];
  for (int i = 0; i < 64 && read(c->fd, sink, sizeof sink) > 0; ++i) {
  }
  close(c->fd);
  conns[c->fd] = NULL;
  free(c->in);
  free(c);
}

static void watch(int epfd, Conn* c, int mode) {
  if (c->watching == mode) return;
  static const unsigned events[] = {[WATCH_IN] = EPOLLIN, [WATCH_OUT] = EPOLLOUT,
                                    [WATCH_NONE] = 0};
  struct epoll_event ev = {.events = events[mode], .data.fd = c->fd};
  epoll_ctl(epfd, EPOLL_CTL_MOD, c->fd, &ev);
  c->watching = mode;
}

/* Answers what is held and takes the requests that follow (paced: counts them for the next
 * tick), until the socket is full. */
static void serve(int epfd, Conn* c) {
  int more;
  do {
    more = take_requests(c);
    int written = flush(c);
    if (written < 0) {
      close_conn(epfd, c);
      return;
    }
    if (written == 0) {
      watch(epfd, c, WATCH_OUT);
      return;
    }
  } while (more && pace_us == 0);
  if (pace_us > 0) more = take_requests(c);
  if ((c->close_after || c->peer_done) && c->owed == 0) {
    close_conn(epfd, c);
    return;
  }
  watch(epfd, c, more || c->peer_done || c->close_after ? WATCH_NONE : WATCH_IN);
}

/* Paced: the whole requests held are counted now and answered at the next tick. */
static void hold(int epfd, Conn* c) {
  int full = take_requests(c);
  if (c->peer_done && c->owed == 0 && c->tail == NULL) {
    close_conn(epfd, c);
  } else if (full || c->peer_done || c->close_after) {
    watch(epfd, c, WATCH_NONE); /* nothing more is read before the tick */
  }
}

static void release_all(int epfd) {
  for (size_t fd = 0; fd < conns_cap; ++fd) {
    Conn* c = conns[fd];
    if (c != NULL && c->watching != WATCH_OUT &&
        (c->owed > 0 || c->tail != NULL || c->close_after || c->peer_done)) {
      serve(epfd, c);
    }
  }
}

static void on_ready(int epfd, Conn* c, unsigned events) {
  if (events & (EPOLLERR | EPOLLHUP)) { /* both ways shut: no answer can reach the client */
    close_conn(epfd, c);
    return;
  }
  size_t room = MAX_HEADER + max_body - c->len; /* never 0 here: a whole request fits */
  if (c->watching == WATCH_IN && !c->close_after && room > 0 &&
      (events & EPOLLIN)) {
    ssize_t n = read(c->fd, c->in + c->len, room);
    if (n == 0) {
      c->peer_done = 1;
    } else if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK) {
      close_conn(epfd, c);
      return;
    } else if (n > 0) {
      c->len += (size_t)n;
    }
  }
  if (pace_us > 0 && c->watching == WATCH_IN) {
    hold(epfd, c);
  } else {
    serve(epfd, c);
  }
}

static void accept_all(int epfd, int listener) {
  for (;;) {
    int fd = accept4(listener, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) return;
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if ((size_t)fd >= conns_cap) {
      size_t cap = conns_cap ? conns_cap : 1024;
      while (cap <= (size_t)fd) cap *= 2;
      Conn** grown = realloc(conns, cap * sizeof *conns);
      if (grown == NULL) {
        close(fd);
        continue;
      }
      memset(grown + conns_cap, 0, (cap - conns_cap) * sizeof *conns);
      conns = grown;
      conns_cap = cap;
    }
    Conn* c = calloc(1, sizeof *c);
    char* in = malloc(MAX_HEADER + max_body);
    struct epoll_event ev = {.events = EPOLLIN, .data.fd = fd};
    if (c == NULL || in == NULL || epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev) != 0) {
      free(c);
      free(in);
      close(fd);
      continue;
    }
    c->fd = fd;
    c->in = in;
    conns[fd] = c;
  }
}

static int read_response(const char* path) {
  FILE* f = fopen(path, "rb");
  if (f == NULL) return -1;
  response = malloc(MAX_RESPONSE);
  response_len = response ? fread(response, 1, MAX_RESPONSE, f) : 0;
  int past_end = response_len == MAX_RESPONSE && fgetc(f) != EOF;
  fclose(f);
  return response_len == 0 || past_end ? -1 : 0;
}

int main(int argc, char** argv) {
  if (argc < 3 || argc > 5) {
    fprintf(stderr, "usage: %s PORT RESPONSE_FILE [MAX_BODY_BYTES [PACE_US]]\n", argv[0]);
    return 2;
  }
  char* rest;
  long port = strtol(argv[1], &rest, 10);
  if (*rest != '\0' || port < 0 || port > 65535) {
    fprintf(stderr, "http_floor: PORT must be 0-65535, got '%s'\n", argv[1]);
    return 2;
  }
  if (argc == 5) {
    pace_us = strtol(argv[4], &rest, 10);
    if (*rest != '\0' || pace_us < 0 || pace_us > 10000000) {
      fprintf(stderr, "http_floor: PACE_US must be 0-10000000, got '%s'\n", argv[4]);
      return 2;
    }
  }
  if (argc >= 4) {
    long long body = strtoll(argv[3], &rest, 10);
    if (*rest != '\0' || body < 0 || body > (1LL << 30)) {
      fprintf(stderr, "http_floor: MAX_BODY_BYTES must be 0-%lld, got '%s'\n", 1LL << 30,
              argv[3]);
      return 2;
    }
    max_body = (size_t)body;
  }
  if (read_response(argv[2]) != 0) {
    fprintf(stderr, "http_floor: RESPONSE_FILE '%s' must hold 1 to %d bytes\n", argv[2],
            MAX_RESPONSE);
    return 2;
  }
  struct sigaction sa = {.sa_handler = on_signal}; /* no SA_RESTART: epoll_wait returns */
  sigaction(SIGTERM, &sa, NULL);
  sigaction(SIGINT, &sa, NULL);
  signal(SIGPIPE, SIG_IGN);

  int listener = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  int one = 1;
  setsockopt(listener, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((unsigned short)port),
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  socklen_t addr_len = sizeof addr;
  if (bind(listener, (struct sockaddr*)&addr, sizeof addr) != 0 || listen(listener, 1024) != 0 ||
      getsockname(listener, (struct sockaddr*)&addr, &addr_len) != 0) {
    fprintf(stderr, "http_floor: cannot listen on 127.0.0.1:%ld: %s\n", port, strerror(errno));
    return 1;
  }
  printf("%d\n", ntohs(addr.sin_port));
  fflush(stdout);

  int epfd = epoll_create1(EPOLL_CLOEXEC);
  struct epoll_event ev = {.events = EPOLLIN, .data.fd = listener};
  epoll_ctl(epfd, EPOLL_CTL_ADD, listener, &ev);
  int ticks = -1;
  if (pace_us > 0) {
    ticks = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
    struct timespec period = {.tv_sec = pace_us / 1000000, .tv_nsec = pace_us % 1000000 * 1000};
    struct itimerspec every = {.it_interval = period, .it_value = period};
    struct epoll_event tick = {.events = EPOLLIN, .data.fd = ticks};
    if (ticks < 0 || timerfd_settime(ticks, 0, &every, NULL) != 0 ||
        epoll_ctl(epfd, EPOLL_CTL_ADD, ticks, &tick) != 0) {
      fprintf(stderr, "http_floor: cannot start a %ld us timer: %s\n", pace_us, strerror(errno));
      return 1;
    }
  }
  struct epoll_event events[256];
  while (!stopping) {
    int n = epoll_wait(epfd, events, 256, -1);
    for (int i = 0; i < n; ++i) {
      int fd = events[i].data.fd;
      if (fd == ticks) {
        unsigned long long expired;
        if (read(ticks, &expired, sizeof expired) > 0) release_all(epfd);
      } else if (fd == listener) {
        accept_all(epfd, listener);
      } else if ((size_t)fd < conns_cap && conns[fd] != NULL) {
        on_ready(epfd, conns[fd], events[i].events);
      }
    }
  }
  return 0;
}

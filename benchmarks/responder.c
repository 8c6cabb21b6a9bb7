/*
 * responder: the cheapest 403 there is, to measure SIPp's own ceiling.
 *
 * benchmarks/bench_sip.py compiles and runs this in a filter's place before
 * the filters: SIPp's uac_403 flood against it shows how many denied calls
 * per second SIPp's caller can drive on this machine that day, the ceiling
 * of the denied column for any filter.  It is not a SIP element: every
 * datagram that starts with "INVITE " is answered with a 403 to its source
 * address, carrying the request's Via, From, To (with a fixed tag added),
 * Call-ID and CSeq lines; anything else (the ACKs) is dropped.  One
 * recvmmsg and one sendmmsg per batch.  Loopback benchmarks only; it runs
 * until killed.
 *
 *     cc -O2 -o responder benchmarks/responder.c && ./responder 127.0.0.1 5099
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>

#define BATCH 64
#define SIZE 4096

static char in[BATCH][SIZE];
static char out[BATCH][SIZE];

/* Is the header line at p (length n) named name (or the compact form c)? */
static int named(const char *p, size_t n, const char *name, char c) {
    size_t k = strlen(name);
    if (n > k && p[k] == ':' && strncasecmp(p, name, k) == 0)
        return 1;
    return c != 0 && n > 1 && (p[0] == c || p[0] == (c ^ 32)) && (p[1] == ':' || p[1] == ' ');
}

/* The 403 for the INVITE in[0..len), into o (size SIZE); its length, or 0. */
static size_t forbid(const char *msg, size_t len, char *o) {
    static const char first[] = "SIP/2.0 403 Forbidden\r\n";
    static const char last[] = "Content-Length: 0\r\n\r\n";
    size_t w = sizeof first - 1;
    const char *p = memchr(msg, '\n', len), *end = msg + len;
    memcpy(o, first, w);
    if (p == NULL)
        return 0;
    for (p++; p < end;) {
        const char *e = memchr(p, '\n', (size_t)(end - p));
        size_t n = e ? (size_t)(e - p) + 1 : (size_t)(end - p);
        if (n <= 2)
            break; /* the empty line */
        int to = named(p, n, "To", 't');
        if (to || named(p, n, "Via", 'v') || named(p, n, "From", 'f') || named(p, n, "Call-ID", 'i') ||
            named(p, n, "CSeq", 0)) {
            size_t body = n - (n >= 2 && p[n - 2] == '\r' ? 2 : 1);
            if (w + body + 16 + sizeof last >= SIZE)
                return 0;
            memcpy(o + w, p, body);
            w += body;
            if (to && memmem(p, body, ";tag=", 5) == NULL) {
                memcpy(o + w, ";tag=r403", 9);
                w += 9;
            }
            memcpy(o + w, "\r\n", 2);
            w += 2;
        }
        p += n;
    }
    memcpy(o + w, last, sizeof last - 1);
    return w + sizeof last - 1;
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: %s IP PORT\n", argv[0]);
        return 2;
    }
    int fd = socket(AF_INET, SOCK_DGRAM, 0);
    int buf = 4 << 20;
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &buf, sizeof buf);
    setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &buf, sizeof buf);
    struct sockaddr_in me = {.sin_family = AF_INET, .sin_port = htons((unsigned short)atoi(argv[2]))};
    if (inet_pton(AF_INET, argv[1], &me.sin_addr) != 1 || bind(fd, (struct sockaddr *)&me, sizeof me) != 0) {
        perror("bind");
        return 1;
    }
    static struct mmsghdr rx[BATCH], tx[BATCH];
    static struct iovec riov[BATCH], tiov[BATCH];
    static struct sockaddr_in from[BATCH];
    for (int i = 0; i < BATCH; i++) {
        riov[i].iov_base = in[i];
        riov[i].iov_len = SIZE;
        rx[i].msg_hdr.msg_iov = &riov[i];
        rx[i].msg_hdr.msg_iovlen = 1;
        rx[i].msg_hdr.msg_name = &from[i];
        tx[i].msg_hdr.msg_iov = &tiov[i];
        tx[i].msg_hdr.msg_iovlen = 1;
    }
    fprintf(stderr, "responder on %s:%s\n", argv[1], argv[2]);
    for (;;) {
        for (int i = 0; i < BATCH; i++)
            rx[i].msg_hdr.msg_namelen = sizeof from[i];
        int got = recvmmsg(fd, rx, BATCH, MSG_WAITFORONE, NULL);
        if (got <= 0)
            continue;
        int n = 0;
        for (int i = 0; i < got; i++) {
            if (rx[i].msg_len < 7 || memcmp(in[i], "INVITE ", 7) != 0)
                continue;
            size_t len = forbid(in[i], rx[i].msg_len, out[n]);
            if (len == 0)
                continue;
            tiov[n].iov_base = out[n];
            tiov[n].iov_len = len;
            tx[n].msg_hdr.msg_name = &from[i];
            tx[n].msg_hdr.msg_namelen = rx[i].msg_hdr.msg_namelen;
            n++;
        }
        for (int sent = 0; sent < n;) {
            int r = sendmmsg(fd, tx + sent, (unsigned)(n - sent), 0);
            if (r <= 0)
                break;
            sent += r;
        }
    }
}

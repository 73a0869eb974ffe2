/*
 * host_board.cpp - a "board" for the protocol tests: the real protocol code
 * (firmware_templates/common/) and the fake model, built with host g++, on
 * stdin/stdout or on a pseudo-terminal.
 *
 *   host_board [--board NAME]
 *       serve stdin/stdout; exit at EOF on stdin. The input is read whole
 *       first, so it holds no silence that would end a line (a test's pipe
 *       writer may stall for any time); silences are tested on the pty.
 *   host_board --script [--board NAME]
 *       stdin holds records "<ms> <n>\n" and n bytes: the n bytes arrive back
 *       to back, then no byte for <ms> ms. The clock is simulated (it starts
 *       a little before the 16-bit millisecond wrap) and advances 1 ms a
 *       step, the board polling after each: every silence and gap is exact.
 *   host_board --pty [--wait-open] [--boot-ms N] [--board NAME]
 *       create a pty, print "PTY <path>" on stdout and serve its master side.
 *       The banner is printed at once; with --wait-open it is printed N ms
 *       (default 200) after each open of the pty instead, and input received
 *       before that is discarded: an Uno resets when a host opens its port
 *       and its bootloader swallows what arrives meanwhile. Exits at EOF on
 *       stdin (the test closed the pipe or died) or on SIGTERM.
 *   SIGUSR1 resets the board at once: line state cleared, banner printed.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include "host_port.h"
#include "tinyml_protocol.h"

static volatile sig_atomic_t g_reset;

static void on_usr1(int sig)
{
    (void)sig;
    g_reset = 1;
}

static long long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void set_nonblocking(int fd)
{
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
}

static void serve_pending(void)
{
    while (tinyml_protocol_poll()) {
    }
    tinyml_host_flush();
}

static int serve_script(const char *board)
{
    int fds[2];
    if (pipe(fds))
        return 1;
    set_nonblocking(fds[0]);
    tinyml_host_fd_in = fds[0];
    tinyml_host_clock_ms = 65536 - 3000;
    tinyml_protocol_begin(board);
    tinyml_host_flush();
    long ms, n;
    while (scanf("%ld %ld", &ms, &n) == 2 && getchar() == '\n') {
        if (ms < 0 || n < 0 || n > 4096)
            return 2;
        for (long i = 0; i < n; i++) {
            int c = getchar();
            char b = (char)c;
            if (c == EOF || write(fds[1], &b, 1) != 1)
                return 2;
        }
        serve_pending();
        for (long t = 0; t < ms; t++) {
            tinyml_host_clock_ms++;
            serve_pending();
        }
    }
    return 0;
}

int main(int argc, char **argv)
{
    const char *board = "host";
    int use_pty = 0, wait_open = 0, boot_ms = 200, script = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--pty"))
            use_pty = 1;
        else if (!strcmp(argv[i], "--script"))
            script = 1;
        else if (!strcmp(argv[i], "--wait-open"))
            wait_open = 1;
        else if (!strcmp(argv[i], "--boot-ms") && i + 1 < argc)
            boot_ms = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--board") && i + 1 < argc)
            board = argv[++i];
        else {
            fprintf(stderr, "usage: %s [--script | --pty [--wait-open] [--boot-ms N]] [--board NAME]\n",
                    argv[0]);
            return 2;
        }
    }
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_usr1;
    sigaction(SIGUSR1, &sa, NULL);

    if (script)
        return serve_script(board);
    if (!use_pty) {
        FILE *whole = tmpfile();
        char buf[4096];
        size_t r;
        if (!whole)
            return 1;
        while ((r = fread(buf, 1, sizeof buf, stdin)) > 0)
            fwrite(buf, 1, r, whole);
        fflush(whole);
        rewind(whole);
        tinyml_host_fd_in = fileno(whole);
        tinyml_protocol_begin(board);
        tinyml_host_flush();
        for (;;) {
            if (g_reset) {
                g_reset = 0;
                tinyml_protocol_begin(board);
                tinyml_host_flush();
            }
            serve_pending();
            if (tinyml_host_hangup)
                return 0;
        }
    }

    int master = posix_openpt(O_RDWR | O_NOCTTY);
    if (master < 0 || grantpt(master) || unlockpt(master)) {
        perror("pty");
        return 1;
    }
    const char *path = ptsname(master);
    /* Keep one slave fd open in raw mode: no echo or newline mangling before
     * the test opens it, and the master never sees a hangup meanwhile. */
    int slave = open(path, O_RDWR | O_NOCTTY);
    struct termios tio;
    if (slave < 0 || tcgetattr(slave, &tio)) {
        perror("pty slave");
        return 1;
    }
    cfmakeraw(&tio);
    tcsetattr(slave, TCSANOW, &tio);
    set_nonblocking(master);
    tinyml_host_fd_in = master;
    tinyml_host_fd_out = master;

    int watch = -1;
    if (wait_open) {
        watch = inotify_init1(IN_NONBLOCK);
        if (watch < 0 || inotify_add_watch(watch, path, IN_OPEN) < 0) {
            perror("inotify");
            return 1;
        }
    }
    printf("PTY %s\n", path);
    fflush(stdout);

    long long boot_at = -1;      /* >= 0: "in the bootloader" until then */
    if (!wait_open) {
        tinyml_protocol_begin(board);
        tinyml_host_flush();
    }
    for (;;) {
        if (g_reset) {
            g_reset = 0;
            tinyml_protocol_begin(board);
            tinyml_host_flush();
        }
        if (boot_at >= 0 && now_ms() >= boot_at) {
            boot_at = -1;
            tcflush(master, TCIFLUSH);   /* what the bootloader swallowed */
            tinyml_protocol_begin(board);
            tinyml_host_flush();
        }
        if (boot_at < 0)
            serve_pending();

        struct pollfd fds[3];
        int n = 0;
        fds[n].fd = 0;
        fds[n].events = POLLIN;
        fds[n++].revents = 0;
        if (boot_at < 0) {
            fds[n].fd = master;
            fds[n].events = POLLIN;
            fds[n++].revents = 0;
        }
        if (watch >= 0) {
            fds[n].fd = watch;
            fds[n].events = POLLIN;
            fds[n++].revents = 0;
        }
        /* wake every few ms: a silence may end the line held */
        int timeout = boot_at >= 0 ? (int)(boot_at - now_ms()) : 5;
        if (boot_at >= 0 && timeout < 0)
            timeout = 0;
        if (poll(fds, (nfds_t)n, timeout) < 0 && errno != EINTR)
            return 1;
        if (fds[0].revents) {
            char buf[64];
            ssize_t r = read(0, buf, sizeof buf);
            if (r <= 0)
                return 0;       /* the owner went away */
        }
        if (watch >= 0 && fds[n - 1].revents) {
            char ev[4096];
            if (read(watch, ev, sizeof ev) > 0)
                boot_at = now_ms() + boot_ms;   /* opened: reset, boot */
        }
    }
}

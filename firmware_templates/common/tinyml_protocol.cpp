/*
 * tinyml_protocol.cpp - the one implementation of the ipytinyml serial
 * protocol (docs/protocol.md), shared by every runtime and board.
 *
 * Hand-written template: ipytinyml copies this file unchanged into every
 * generated sketch. Edit it here, in firmware_templates/common/, never in a
 * sketch folder. It is C that also compiles as C++ (the Arduino build
 * compiles .cpp files as C++), warning-free with -Wall -Wextra on host gcc
 * and avr-gcc.
 *
 * Memory (static, about 170 bytes on AVR): one line buffer (TINYML_LINE_MAX
 * + 1 bytes), two 26-byte integers for number conversion, the int8 input of
 * one inference and the int8 outputs of one request; no heap, no recursion,
 * no floating point. A line is handled in passes over the buffer: the first
 * checks every value, so an answer starts with "ok" only when the whole
 * request is valid (requests park their int8 values in the part of the
 * buffer already read); the second runs the model, keeping only int8
 * outputs; the answer is printed last.
 *
 * Numbers, exactly and with integers only (no float library on AVR):
 * - A decimal token D * 10^e becomes the correctly rounded float32 (ties to
 *   even). The common case, at most 9 significant digits with D * 10^e or
 *   10^-e below 10^9, takes 32-bit registers: an integer below 2^24 is
 *   only normalized, else one long division of D * 10^e by 10^-e that stops
 *   when the remainder is 0. Otherwise binary long division of R = D * 10^e
 *   by V = 10^-e on byte arrays. Up to 20 significant digits are kept; a
 *   longer number keeps 20 and a sticky 21st digit (1 if any dropped digit
 *   is non-zero), exact unless the dropped digits decide a tie.
 * - The input pre-stage (ipytinyml/prestage.py): value k of a row (k =
 *   its position modulo TINYML_N_INPUTS) becomes fl32(x - mean_k), one IEEE
 *   float32 subtraction rounded to nearest even (sub_f32()), then
 *   QUANTIZE with the divisor div_k: fl32(x / div_k) by long division,
 *   only as far as the result needs (see quantize()), with the result of
 *   rounding the quotient to float32 (ties to even) as an IEEE division
 *   does, then rounding half away from zero; clamps to int8. With mean 0
 *   and div = the input scale this is TFLite's QUANTIZE.
 * - The human answer prints scale * (q - zero_point), computed exactly, with
 *   two decimals (rounded half away from zero). For a classifier (the model
 *   header defines TINYML_CLASS_NAMES) it prints the winning class and its
 *   probability instead, decided on the int8 scores by integer comparisons
 *   that codegen derived from the notebook's rule (class_of()); requests answer the class index too, "class=".
 */
#define TINYML_PORT_IMPLEMENTATION 1
#include "tinyml_protocol.h"
#include "tinyml_model.h"

#include <string.h>

#ifndef TINYML_INPUT_LABEL
#define TINYML_INPUT_LABEL "in"
#endif
#ifndef TINYML_OUTPUT_LABEL
#define TINYML_OUTPUT_LABEL "out"
#endif

#define TINYML_STR_(x) #x
#define TINYML_STR(x) TINYML_STR_(x)

#define N_IN (TINYML_N_INPUTS)
#define N_OUT (TINYML_N_OUTPUTS)

/* Outputs of one request: 16 bytes, or one inference if that is bigger. */
#define MAX_INFERENCES (N_OUT >= 16 ? 1 : 16 / N_OUT)
/* Values per request; at most 40 tokens fit in a 79-character line. */
#define MAX_VALUES_RAW (MAX_INFERENCES * N_IN)
#define MAX_VALUES (MAX_VALUES_RAW <= 40 ? MAX_VALUES_RAW : N_IN <= 40 ? (40 / N_IN) * N_IN : N_IN)

/* The input pre-stage's constants: per feature {mean, divisor} as float32
 * bits. The generated tinyml_model.h holds the initializer, so the table
 * sits in flash here, next to the code that reads it. */
static const uint32_t input_stage[N_IN][2] TINYML_PROGMEM = TINYML_INPUT_STAGE_BITS;

#ifdef TINYML_CLASS_NAMES
#if !(TINYML_N_CLASSES == N_OUT || (TINYML_N_CLASSES == 2 && N_OUT == 1 && defined(TINYML_CLASS_MIN_Q)))
#error "a classifier has one output per class, or one sigmoid output for two classes"
#endif
/* The class names, each ended by a NUL; in flash, as an Uno has 2 KB of RAM. */
static const char class_names[] TINYML_PROGMEM = TINYML_CLASS_NAMES;
#endif

/* float32 bits -> its biased exponent field, by byte moves (a 23-bit shift
 * is a loop on AVR) */
#define F32_BIASED(bits) ((uint8_t)((uint16_t)((bits) >> 16) >> 7))

/* float32 bits -> mantissa with the hidden bit, unbiased exponent (normal floats) */
#define F32_MANT(bits) ((uint32_t)(((bits) & 0x7fffffUL) | 0x800000UL))
#define F32_EXP(bits) ((int16_t)(((uint32_t)(bits) >> 23) & 0xff) - 127)

enum {
    E_LONG = 1,    /* line too long */
    E_NUMBER = 2,  /* bad number */
    E_COUNT = 3,   /* wrong count */
    E_COMMAND = 4, /* unknown command */
    E_RANGE = 5,   /* out of range */
    E_TEXT = 6,    /* not text */
    E_EMPTY = 7,   /* empty line */
    E_MODEL = 8,   /* model failed */
    E_CHECK = 9    /* bad check */
};

/* Texts of the codes above, in order, each ended by a NUL. */
static const char err_texts[] TINYML_PROGMEM =
    "line too long\0bad number\0wrong count\0unknown command\0"
    "out of range\0not text\0empty line\0model failed\0bad check";

#define F_OVERFLOW 1    /* the line had more than TINYML_LINE_MAX characters */
#define F_AFTER_CR 2    /* the previous byte was '\r': a '\n' now ends nothing */
#define F_AFTER_GAP 4   /* a silence ended the line: a line end now ends nothing */
#define F_TYPED 8       /* a gap between two bytes: a person types it, Enter ends it */

static char line[TINYML_LINE_MAX + 1];
static uint8_t line_len;
static uint8_t line_flags;
static uint16_t last_read_ms;   /* when the RX buffer was last emptied */
static uint8_t has_id;
static uint16_t req_id;
static const char *board_name;
static int8_t in_q[N_IN];
static int8_t out_q[MAX_INFERENCES * N_OUT];

/* ------------------------------------------------------------- output */

static void put_c(char c) { tinyml_port_write(c); }

static void put_flash(const char *p)
{
    char c;
    while ((c = TINYML_FLASH_BYTE(p++)) != 0)
        put_c(c);
}

#define PUT(s) put_flash(TINYML_FLASH(s))

static const uint32_t powers_of_10[9] TINYML_PROGMEM = {
    1000000000UL, 100000000UL, 10000000UL, 1000000UL, 100000UL, 10000UL, 1000UL, 100UL, 10UL,
};

/* decimal, by subtraction: no 32-bit division on AVR */
static void put_u(uint32_t v)
{
    uint8_t started = 0;
    for (uint8_t i = 0; i < 9; i++) {
        uint32_t p = TINYML_FLASH_U32(&powers_of_10[i]);
        char d = '0';
        while (v >= p) {
            v -= p;
            d++;
        }
        if (d != '0')
            started = 1;
        if (started)
            put_c(d);
    }
    put_c((char)('0' + v));
}

static void put_i(int16_t v)
{
    if (v < 0) {
        put_c('-');
        v = (int16_t)-v;
    }
    put_u((uint16_t)v);
}

/* lowercase hex digit of the low nibble of d */
static char hex_digit(uint8_t d)
{
    d &= 15;
    return (char)(d < 10 ? '0' + d : 'a' - 10 + d);
}

static void put_hex(uint32_t v)
{
    PUT("0x");
    for (uint8_t i = 0; i < 8; i++, v <<= 4)
        put_c(hex_digit((uint8_t)(v >> 28)));
}

/* The pre-stage table as two info fields: " imean=<hex>,<hex>,..." (column 0)
 * and " idiv=..." (column 1); the keys sit 8 bytes apart in stage_keys. */
static const char stage_keys[] TINYML_PROGMEM = " imean=\0 idiv=";

static void put_stage(void)
{
    for (uint8_t col = 0; col < 2; col++) {
        put_flash(stage_keys + 8 * col);
        for (uint8_t k = 0; k < N_IN; k++) {
            if (k)
                put_c(',');
            put_hex(TINYML_FLASH_U32(&input_stage[k][col]));
        }
    }
}

static void put_eol(void) { PUT("\r\n"); }

/* "@<id> " for a request with a valid id */
static void put_id(void)
{
    put_c('@');
    put_u(req_id);
    put_c(' ');
}

static void put_error(uint8_t code)
{
    const char *text = err_texts;
    if (has_id) {
        put_id();
        PUT("err ");
    } else {
        PUT("#err ");
    }
    put_c((char)('0' + code));
    put_c(' ');
    while (--code)
        while (TINYML_FLASH_BYTE(text++) != 0) {
        }
    put_flash(text);
    put_eol();
}

/* Fields shared by the banner and the info answer. */
static void put_identity(void)
{
    PUT("proto=" TINYML_STR(TINYML_PROTO_VERSION) " runtime=" TINYML_RUNTIME " board=");
    put_flash(board_name);
    PUT(" model=" TINYML_MODEL_HASH " in=");
    put_u(N_IN);
    PUT(" out=");
    put_u(N_OUT);
}

/* Human output: the exact value scale * k, k = q - zero_point, rounded half
 * away from zero to two decimals. |k| <= 256 (a sigmoid's 1 - p reaches 256). */
static void put_scaled(int16_t k)
{
    /* |value| = mant * |k| * 2^shift; mant * |k| <= (2^24 - 1) * 256 fits */
    uint32_t v = F32_MANT(TINYML_OUTPUT_SCALE_BITS) * (uint32_t)(k < 0 ? -k : k);
    int16_t shift = (int16_t)(F32_EXP(TINYML_OUTPUT_SCALE_BITS) - 23);
    uint8_t hundredths = 0;
    if (shift > 0) {
        PUT("ovf");
        return;
    }
    for (; shift < -24; shift++)
        v = (v >> 1) | (v & 1);     /* keep a sticky bit for the rounding */
    if (shift) {
        uint8_t s = (uint8_t)-shift;
        uint32_t frac = v & (((uint32_t)1 << s) - 1);
        v >>= s;
        frac = (frac * 100 + ((uint32_t)1 << (s - 1))) >> s;
        if (frac == 100) {
            v++;
            frac = 0;
        }
        hundredths = (uint8_t)frac;
    }
    if (k < 0 && (v || hundredths))
        put_c('-');
    put_u(v);
    put_c('.');
    put_c((char)('0' + hundredths / 10));
    put_c((char)('0' + hundredths % 10));
}

#ifdef TINYML_CLASS_NAMES
/* The class of the int8 scores y of one inference, decided as the notebook's
 * top_class() decides on the dequantized scores: the first highest score
 * (dequantization is increasing, so comparing int8 is the same), or for one
 * sigmoid output p > 0.5, which codegen turned into q >= TINYML_CLASS_MIN_Q. */
static uint8_t class_of(const int8_t *y)
{
#if N_OUT == 1
    return y[0] >= (TINYML_CLASS_MIN_Q);
#else
    uint8_t c = 0;
    for (uint8_t i = 1; i < N_OUT; i++)
        if (y[i] > y[c])
            c = i;
    return c;
#endif
}

/* " <class> (<probability>)" for the int8 scores y of one inference; a
 * sigmoid's class 0 has probability 1 - p. */
static void put_class(const int8_t *y)
{
    const char *name = class_names;
    uint8_t c = class_of(y);
#if N_OUT == 1
    int16_t k = (int16_t)(y[0] - (TINYML_OUTPUT_ZERO_POINT));
    if (!c)
        k = (int16_t)((TINYML_CLASS_ONE_K) - k);
#else
    int16_t k = (int16_t)(y[c] - (TINYML_OUTPUT_ZERO_POINT));
#endif
    for (uint8_t i = c; i; i--)
        while (TINYML_FLASH_BYTE(name++) != 0) {
        }
    put_c(' ');
    put_flash(name);
    PUT(" (");
    put_scaled(k);
    put_c(')');
}
#endif

/* The outputs of a human answer, n int8 values in out_q: a classifier's
 * ": <class> (<p>), <class> (<p>)" (one class per inference), or else every
 * value dequantized, " <v> <v>". */
static void put_human_outputs(uint8_t n)
{
#ifdef TINYML_CLASS_NAMES
    put_c(':');
    for (uint8_t k = 0; k < n; k = (uint8_t)(k + N_OUT)) {
        if (k)
            put_c(',');
        put_class(out_q + k);
    }
#else
    for (uint8_t k = 0; k < n; k++) {
        put_c(' ');
        put_scaled((int16_t)(out_q[k] - (TINYML_OUTPUT_ZERO_POINT)));
    }
#endif
}

/* -------------------------------------------------------------- tokens */

static uint8_t is_sep(char c) { return c == ' ' || c == ',' || c == '\t'; }
static uint8_t ends_token(char c) { return c == 0 || is_sep(c); }
static uint8_t is_digit(char c) { return (uint8_t)(c - '0') < 10; }

/* the read position in line[] while a line is handled */
static const char *cur;

/* skip separators at cur; returns the next character (0 at the end) */
static char skip_seps(void)
{
    while (is_sep(*cur))
        cur++;
    return *cur;
}

/* ------------------------------------------------------------- numbers */

/* Little-endian byte integers R and V sharing one used length big_n. The
 * bounds checked in value() keep both below 2^198 (25 bytes). */
#define BIG_BYTES 26
static uint8_t big[2 * BIG_BYTES];
static uint8_t big_n;
#define BIG_R big
#define BIG_V (big + BIG_BYTES)

/* the float32 of the last number parsed: (-1)^f_neg * f_mant * 2^(f_exp - 23),
 * 2^23 <= f_mant < 2^24 or f_mant == 0 (big_round() sets f_mant) */
static uint32_t f_mant;
static int16_t f_exp;
static uint8_t f_neg;

/* R = V = 0. Bytes from big_n up are never read: only the 4 bytes
 * big_u32() reads are cleared, a byte is cleared in both integers when
 * either grows to it (no 52-byte memset per number). */
static void big_clear(void)
{
    for (uint8_t i = 0; i < 4; i++)
        BIG_R[i] = BIG_V[i] = 0;
    big_n = 1;
}

/* a = a * 10 + add, or a = a * 2 (mul 2, add 0); grows big_n on a carry */
static void big_mul_add(uint8_t *a, uint8_t mul, uint8_t add)
{
    uint16_t c = add;
    for (uint8_t i = 0; i < big_n; i++) {
        c = (uint16_t)(c + a[i] * mul);
        a[i] = (uint8_t)c;
        c >>= 8;
    }
    if (c && big_n < BIG_BYTES) {
        BIG_R[big_n] = BIG_V[big_n] = 0;
        a[big_n++] = (uint8_t)c;
    }
}

/* R <=> V: -1, 0, 1 */
static int8_t big_cmp(void)
{
    uint8_t i = big_n;
    while (i--)
        if (BIG_R[i] != BIG_V[i])
            return BIG_R[i] < BIG_V[i] ? -1 : 1;
    return 0;
}

/* Round the 25-bit quotient m (24 bits and a round bit) with the sticky
 * remainder flag to float32, ties to even: f_mant (2^23 <= f_mant < 2^24)
 * and the exponent returned (> 127: rounds to infinity). Below 2^-126
 * f_mant is 0: subnormals flush to zero, which changes no QUANTIZE result
 * for any scale >= 2^-125. */
static int16_t round_mantissa(uint32_t m, uint8_t sticky, int16_t x)
{
    if ((m & 1) && ((m & 2) || sticky))
        m += 2;
    m >>= 1;
    if (m >> 24) {
        m >>= 1;
        x++;
    }
    f_mant = x < -126 ? 0 : m;
    return x;
}

/* r / v * 2^x rounded to float32 (see round_mantissa), for 0 < r, v < 2^30:
 * the common case, in 32-bit registers. */
static int16_t small_round(uint32_t r, uint32_t v, int16_t x)
{
    uint32_t m = 0;
    for (; r >= v; x++)
        v <<= 1;
    for (; r < v; x--)
        r <<= 1;
    /* now v <= r < 2v: 24 quotient bits and a round bit by long division,
     * which stops once the remainder is 0 (exact quotients: integers) */
    for (uint8_t i = 25; i; i--) {
        m <<= 1;
        if (r >= v) {
            r -= v;
            m |= 1;
        }
        if (!r) {
            m <<= i - 1;
            break;
        }
        r <<= 1;
    }
    return round_mantissa(m, r != 0, x);
}

/* the low 4 bytes of a byte integer */
static uint32_t big_u32(const uint8_t *a)
{
    return a[0] | (uint16_t)a[1] << 8 | (uint32_t)a[2] << 16 | (uint32_t)a[3] << 24;
}

/* R / V (R > 0) rounded to float32 (see round_mantissa). */
static int16_t big_round(void)
{
    uint32_t m = 0;
    uint8_t i, sticky = 0;
    int16_t x = 0;
    for (; big_cmp() >= 0; x++)
        big_mul_add(BIG_V, 2, 0);
    for (; big_cmp() < 0; x--)
        big_mul_add(BIG_R, 2, 0);
    for (i = 0; i < 25; i++) {
        m <<= 1;
        if (big_cmp() >= 0) {
            uint8_t borrow = 0;
            for (uint8_t j = 0; j < big_n; j++) {
                uint16_t d = (uint16_t)(BIG_R[j] - BIG_V[j] - borrow);
                BIG_R[j] = (uint8_t)d;
                borrow = (uint8_t)(d >> 15);
            }
            m |= 1;
        }
        big_mul_add(BIG_R, 2, 0);
    }
    for (i = 0; i < big_n; i++)
        sticky |= BIG_R[i];
    return round_mantissa(m, sticky, x);
}

/* f_* = fl32(f_* - m), m given by its float32 bits (finite): one IEEE
 * float32 subtraction, rounded to nearest, ties to even, with integers only.
 *
 * Both mantissas get 5 bits below them (so they are below 2^29) and the one
 * with the smaller exponent is shifted right to the other's, every bit
 * shifted out kept in bit 0 (a sticky bit). x - m = x + (-m): the magnitudes
 * are added when the signs of x and m differ, else |m| is subtracted in two's
 * complement and a negative result flips the sign. The sum r (< 2^30) is
 * normalized to bit 29 and round_mantissa() rounds it as an integer, ties to
 * even. That is the rounding of the exact difference: an alignment of 0 or
 * 1 bit loses nothing; a longer one leaves r odd with the exact sum strictly
 * between r - 1 and r + 1, and r has at least 28 bits, so every rounding
 * boundary (a multiple of 2^3 or more) lies outside that interval.
 * Results below 2^-126 flush to zero, as parsed values do (a difference that
 * small quantizes to the zero point for any divisor >= 2^-100); beyond
 * float32 range f_exp is 128, which quantize() saturates as IEEE's infinity
 * would. Exponents fit int8 (-126..127). On an Uno this takes about 300-350
 * cycles for values near the mean and at most about 1000 for absurd ones
 * (3e38 against a mean of 1: the alignment stops once only the sticky bit
 * is left); benchmarks/bench_prestage_cycles.py measures it. */
static void sub_f32(uint32_t m)
{
    uint32_t a = f_mant << 5, b = m & 0x7fffffUL;
    int8_t ea = (int8_t)f_exp, e_a = ea, eb = (int8_t)(F32_BIASED(m) - 127);

    if (eb != -127)
        b |= 0x800000UL;            /* the hidden bit of a normal m */
    else
        eb = -126;                  /* a subnormal m: 0.fraction * 2^-126 */
    if (!b)
        return;                     /* x - 0 = x: the identity stage costs nothing */
    b <<= 5;
    if (!a || eb > ea)
        ea = eb;                    /* the result's exponent (x = 0: m's) */
    /* once 0 or 1 (sticky only), an operand stays so: stop shifting */
    for (; e_a < ea && a > 1; e_a++) {
        if (a & 1)
            a = (a >> 1) | 1;
        else
            a >>= 1;
    }
    for (; eb < ea && b > 1; eb++) {
        if (b & 1)
            b = (b >> 1) | 1;
        else
            b >>= 1;
    }
    if (f_neg == (uint8_t)(m >> 31))
        b = 0 - b;                  /* same signs: |x| - |m| */
    a += b;
    if (a >> 31) {
        a = 0 - a;
        f_neg ^= 1;
    }
    int16_t e = (int16_t)(ea + 1);
    for (; a && !(a & 0x20000000UL); e--)
        a <<= 1;
    f_exp = round_mantissa(a >> 5, (uint8_t)(a & 31), e);
}

/* TFLite QUANTIZE of the float32 f_* with the divisor div (float32 bits; the
 * input scale when the stage is the identity): t = x / div rounded to float32,
 * round half away from zero, add the zero point, clamp to int8. |t| >= 256
 * saturates (TFLite's cast to int32 is undefined beyond 2^31).
 *
 * Exactly, with only as many quotient bits as decide the result: |x| /
 * scale = q * 2^e with 1 <= q < 2, its bits from 2^e down. With n the
 * integer part and h the 2^-1 bit: h = 1 means |t| >= n + 0.5 (n + 0.5 is a
 * float32), so n + 1; h = 0 gives n unless the quotient's bits from 2^-2
 * down to the round bit (2^(e-24)) are all ones, when rounding to float32
 * carries into n + 0.5 (ties go there too: its mantissa is even), so n + 1.
 * That is (floor(2 |t|) + 1 + carry) / 2, and the first zero bit below h
 * rules the carry out: usually a bit or two after h, not 25 bits. */
static int8_t quantize(uint32_t div)
{
    int16_t r = 0;
    if (f_mant) {
        uint32_t a = f_mant, v = F32_MANT(div);    /* div is normal: >= 2^-100 */
        int16_t x = (int16_t)(f_exp - (F32_BIASED(div) - 127));
        uint16_t n = 0;     /* floor(2 |t|), then |t| rounded */
        if (a < v) {
            a <<= 1;
            x--;
        }
        /* now v <= a < 2v: |x / div| = (a / v) * 2^x; beyond 2^8 all
         * saturate, so 2^8 stands for them */
        if (x > 8)
            x = 8;
        if (x >= -2) {
            uint8_t head = (uint8_t)(x + 2);    /* bits 2^x .. 2^-1 */
            uint8_t tail = (uint8_t)(23 - x);   /* bits 2^-2 .. 2^(x-24) */
            for (;;) {
                uint8_t bit = a >= v;
                if (bit)
                    a -= v;
                a <<= 1;
                if (head) {
                    head--;
                    n = (uint16_t)(n * 2 + bit);
                } else if (!bit) {
                    break;
                } else if (!--tail) {
                    n++;        /* all ones down to the round bit: carries */
                    break;
                }
            }
        }
        n = (uint16_t)((n + 1) >> 1);
        r = (int16_t)(f_neg ? -(int16_t)n : (int16_t)n);
    }
    r = (int16_t)(r + (TINYML_INPUT_ZERO_POINT));
    return (int8_t)(r > 127 ? 127 : r < -128 ? -128 : r);
}

#define P_DIGIT 1
#define P_DOT 2
#define P_STICKY 4
#define P_EXP 8

/* Parse the value token at cur for command cmd and move cur past it: 'r'
 * an int8 into *q, 'p' or 0 (human) a decimal number into f_*. Returns 0 or
 * an error code. Syntax: [+-] digits [. digits] [(e|E) [+-] digits] with at
 * least one mantissa digit; 'r' takes [+-] digits only. */
static uint8_t parse_value(char cmd, int8_t *q)
{
    const char *p = cur;
    uint8_t neg = 0, flags = 0, nd = 0, eneg = 0;
    int16_t e10 = 0, ex = 0;

    big_clear();
    BIG_V[0] = 1;
    f_mant = 0;
    if (*p == '-' || *p == '+')
        neg = *p++ == '-';
    for (;; p++) {
        if (is_digit(*p)) {
            flags |= P_DIGIT;
            if (nd < 20) {
                if (nd || *p != '0') {
                    big_mul_add(BIG_R, 10, (uint8_t)(*p - '0'));
                    nd++;
                }
                if (flags & P_DOT)
                    e10--;
            } else {
                if (*p != '0')
                    flags |= P_STICKY;
                if (!(flags & P_DOT))
                    e10++;
            }
        } else if (*p == '.' && !(flags & P_DOT)) {
            flags |= P_DOT;
        } else {
            break;
        }
    }
    if (*p == 'e' || *p == 'E') {
        flags |= P_EXP;
        if (*++p == '-' || *p == '+')
            eneg = *p++ == '-';
        if (!is_digit(*p))
            return E_NUMBER;
        for (; is_digit(*p); p++)
            if (ex < 1000)
                ex = (int16_t)(ex * 10 + (*p - '0'));
    }
    if (!(flags & P_DIGIT) || !ends_token(*p))
        return E_NUMBER;
    cur = p;
    e10 = (int16_t)(eneg ? e10 - ex : e10 + ex);
    /* value = D * 10^e10, D of nd digits: 10^(nd+e10-1) <= value < 10^(nd+e10) */

    if (cmd == 'r') {
        if (flags & (P_DOT | P_EXP))
            return E_NUMBER;
        ex = (int16_t)(BIG_R[0] | BIG_R[1] << 8);   /* D, when below 1000 */
        if (nd + e10 > 3 || ex > 128 || (ex == 128 && !neg))
            return E_RANGE;
        *q = (int8_t)(neg ? -ex : ex);
        return 0;
    }

    if (nd && nd + e10 > 39)
        return E_RANGE;                 /* >= 1e39 > FLT_MAX */
    f_neg = neg;
    f_exp = 0;
    if (!nd || nd + e10 <= -39)
        return 0;                       /* 0, or < 1e-39 < 2^-126: flushed to 0 */
    if (nd <= 9 && e10 >= -9 && nd + e10 <= 9) {
        /* the common case, D * 10^e10 with D and 10^-e10 or D * 10^e10
         * below 10^9 < 2^30: one 32-bit long division (it stops early for
         * exact quotients), none for integers below 2^24 */
        uint32_t d = big_u32(BIG_R);
        for (; e10 > 0; e10--)
            d *= 10;
        if (!e10 && d < 0x1000000UL) {
            /* an integer below 2^24 is a float32 already: normalize */
            for (e10 = 23; d < 0x800000UL; e10--)
                d <<= 1;
            f_mant = d;
            f_exp = e10;
        } else {
            f_exp = small_round(d, e10 ? TINYML_FLASH_U32(&powers_of_10[9 + e10]) : 1, 0);
        }
        return 0;
    }
    if (flags & P_STICKY) {
        big_mul_add(BIG_R, 10, 1);
        e10--;
    }
    for (; e10 > 0; e10--)
        big_mul_add(BIG_R, 10, 0);      /* R = D * 10^e10 */
    for (; e10 < 0; e10++)
        big_mul_add(BIG_V, 10, 0);      /* V = 10^-e10 */
    f_exp = big_round();
    if (f_exp > 127)
        return E_RANGE;                 /* rounds to infinity */
    return 0;
}

/* The value token at cur as the int8 the model gets; k: its feature (its
 * position in the row), which picks the pre-stage's mean and divisor. Not
 * inlined: the two passes of run_values() share one copy (saves flash). */
__attribute__((noinline)) static uint8_t value(char cmd, int8_t *q, uint8_t k)
{
    uint8_t rc = parse_value(cmd, q);
    if (!rc && cmd != 'r') {
        const uint32_t *c = input_stage[k];
        sub_f32(TINYML_FLASH_U32(c));
        *q = quantize(TINYML_FLASH_U32(c + 1));
    }
    return rc;
}

/* ---------------------------------------------------------------- lines */

/* Answer a value line ('p', 'r', or 0 for a human line) whose values start
 * at cur. Returns an error code, or 0 once the answer is printed. */
static uint8_t run_values(char cmd)
{
    const char *start = cur;
    uint8_t rc, count = 0, k = 0, o = 0;
    int8_t q = 0;
#if TINYML_PORT_HAS_CYCLES
    uint32_t cycles = 0;
#define US (cycles / TINYML_PORT_CYCLES_PER_US)
#else
    uint32_t us = 0, t0;
#define US us
#endif

    /* pass 1: every value valid, count a multiple of the inputs. For a
     * request the int8 values are parked in the start of the line buffer,
     * which the parser has passed (value k goes to line[k]; value k ends
     * beyond index 5 + 2k); a human line keeps its text for the echo. */
    for (cur = start; skip_seps(); count++) {
        rc = value(cmd, &q, k);
        if (rc)
            return rc;
        if (cmd)
            line[count] = (char)q;
        if (++k == N_IN)
            k = 0;
    }
    if (count == 0 || count > MAX_VALUES || count % N_IN)
        return E_COUNT;

    /* pass 2: run the model on each group of N_IN values */
    cur = start;
    for (uint8_t i = 0; i < count; i++) {
        if (cmd) {
            q = (int8_t)line[i];
        } else {
            skip_seps();
            value(cmd, &q, k);          /* human line: quantize again */
        }
        in_q[k] = q;
        if (++k == N_IN) {
            k = 0;
#if TINYML_PORT_HAS_CYCLES
            tinyml_port_cycles_begin();
            rc = (uint8_t)tinyml_model_invoke(in_q, out_q + o);
            cycles += tinyml_port_cycles_end();
#else
            t0 = tinyml_port_micros();
            rc = (uint8_t)tinyml_model_invoke(in_q, out_q + o);
            us += tinyml_port_micros() - t0;
#endif
            if (rc)
                return E_MODEL;
            o = (uint8_t)(o + N_OUT);
        }
    }

    /* the answer: "@<id> ok <int8s> us=<n> cyc=<n>" or
     * "<label> <values as typed> -> <label> <outputs> (<n> us)" */
    if (cmd) {
        put_id();
        PUT("ok");
    } else {
        PUT(TINYML_INPUT_LABEL);
        for (cur = start; skip_seps();) {
            put_c(' ');
            while (!ends_token(*cur))
                put_c(*cur++);
        }
        PUT(" -> " TINYML_OUTPUT_LABEL);
    }
    if (cmd) {
        for (k = 0; k < o; k++) {
            put_c(' ');
            put_i(out_q[k]);
        }
#ifdef TINYML_CLASS_NAMES
        PUT(" class=");
        for (k = 0; k < o; k = (uint8_t)(k + N_OUT)) {
            if (k)
                put_c(',');
            put_u(class_of(out_q + k));
        }
#endif
    } else {
        put_human_outputs(o);
    }
    if (cmd) {
        PUT(" us=");
        put_u(US);
#if TINYML_PORT_HAS_CYCLES
        PUT(" cyc=");
        put_u(cycles);
#endif
    } else {
        PUT(" (");
        put_u(US);
        PUT(" us)");
    }
#undef US
    put_eol();
    return 0;
}

static void answer_info(void)
{
    put_id();
    PUT("ok ");
    put_identity();
    PUT(" iscale=");
    put_hex(TINYML_INPUT_SCALE_BITS);
    PUT(" izp=");
    put_i(TINYML_INPUT_ZERO_POINT);
    PUT(" oscale=");
    put_hex(TINYML_OUTPUT_SCALE_BITS);
    PUT(" ozp=");
    put_i(TINYML_OUTPUT_ZERO_POINT);
    PUT(" arena=");
    put_u(TINYML_ARENA_BYTES);
    PUT(" free=");
    put_u(tinyml_port_free_ram());
    PUT(" max=");
    put_u(MAX_VALUES);
    put_stage();
    put_eol();
}

/* A request ends with its check "*LLCCII" (trailing separators aside): LL
 * the count of the line's bytes before the '*', CC their CRC-8 (polynomial
 * 0x07, initial value 0), II the id's low byte (id: the value of the digits
 * after the '!', valid or not; they stop at the '*' at the latest). Bytes
 * lost to a full RX buffer change the count. A lost line end that glues the
 * start of one request to an end of the same length of the next keeps the
 * count, but then the id at the start is not the one II names (hosts keep
 * the ids in flight distinct modulo 256). Returns 1 and cuts the check off
 * the line when it matches. */
static uint8_t strip_check(uint8_t id)
{
    uint8_t n = line_len, crc = 0, i;
    uint16_t want;
    while (n && is_sep(line[n - 1]))
        n--;
    if (n < 7 || line[n - 7] != '*')
        return 0;
    n = (uint8_t)(n - 7);
    for (i = 0; i < n; i++) {
        crc ^= (uint8_t)line[i];
        for (uint8_t b = 0; b < 8; b++)
            crc = (uint8_t)(crc & 0x80 ? (crc << 1) ^ 0x07 : crc << 1);
    }
    /* "| 0x20" takes either case and no other byte: the line is text */
    want = (uint16_t)((uint16_t)n << 8 | crc);
    for (i = 1; i < 7; i++, want = (uint16_t)(want << 4)) {
        if (i == 5)
            want = (uint16_t)id << 8;
        if ((line[n + i] | 0x20) != hex_digit((uint8_t)(want >> 12)))
            return 0;
    }
    line[n] = 0;
    return 1;
}

static void handle_line(void)
{
    uint8_t code = 0, i;
    char cmd = 0;

    if (line_flags & F_OVERFLOW) {
        code = E_LONG;
    } else {
        for (i = 0; i < line_len; i++) {
            uint8_t c = (uint8_t)line[i];
            if ((c < 0x20 && c != '\t') || c > 0x7e)
                code = E_TEXT;
        }
    }

    /* a request: "!" and an id 0..65535 (1 to 5 digits) ending the token.
     * The digits come first, for the check's II: cutting the check off
     * cannot change them (its '*' stops them), only whether they end the
     * token, which is asked after. */
    has_id = 0;
    cur = line;
    if (skip_seps() == '!') {
        cmd = '!';
        big_clear();
        for (i = 0; is_digit(*++cur); i++)
            big_mul_add(BIG_R, 10, (uint8_t)(*cur - '0'));
        if (!code && !strip_check(BIG_R[0]))
            code = E_CHECK;
        if (i && i <= 5 && !BIG_R[2] && ends_token(*cur)) {
            has_id = 1;
            req_id = (uint16_t)(BIG_R[0] | BIG_R[1] << 8);
        }
    }

    if (!code) {
        if (cmd) {
            cmd = skip_seps();
            cur++;
            if (!has_id || (cmd != 'i' && cmd != 'p' && cmd != 'r') || !ends_token(*cur))
                code = E_COMMAND;
        } else if (!skip_seps()) {
            code = E_EMPTY;
        }
    }
    if (!code) {
        if (cmd != 'i')
            code = run_values(cmd);
        else if (skip_seps())
            code = E_COUNT;
        else
            answer_info();
    }
    if (code)
        put_error(code);
}

void tinyml_protocol_begin(const char *board_flash)
{
    board_name = board_flash;
    line_len = 0;
    line_flags = 0;
    PUT("#tinyml ready ");
    put_identity();
    put_eol();
}

int tinyml_protocol_poll(void)
{
    int c = tinyml_port_read();
    uint16_t now = (uint16_t)tinyml_port_millis();
    uint16_t quiet = (uint16_t)(now - last_read_ms);
    uint8_t next;           /* line_flags once the line held is answered */
    if (c < 0) {
        /* A silence ends a line, so a value sent with no line ending (the
         * Serial Monitor's default) is answered and not glued to the next.
         * Timed from the last byte read, not received: a line that waited
         * in the RX buffer during a long inference is read whole first.
         * A lone byte waits longer: it may be the first key a person types
         * in a terminal that sends each key, before any gap marked it typed. */
        if (!line_len || (line_flags & F_TYPED) ||
            quiet < (line_len == 1 ? TINYML_LINE_SILENCE1_MS : TINYML_LINE_SILENCE_MS))
            return 0;
        next = F_AFTER_GAP;
    } else {
        /* A line is held only while the RX buffer is empty, so last_read_ms
         * is when its previous byte was read. */
        if (line_len && quiet > TINYML_TYPED_GAP_MS)
            line_flags |= F_TYPED;
        for (;;) {
            if (c == '\n' || c == '\r') {
                next = c == '\r' ? F_AFTER_CR : 0;
                if (!(line_flags & F_AFTER_GAP) && (c == '\r' || !(line_flags & F_AFTER_CR)))
                    break;
                line_flags = next;      /* the end of a line already answered */
            } else {
                line_flags &= (uint8_t)~(F_AFTER_CR | F_AFTER_GAP);
                if (line_len < TINYML_LINE_MAX)
                    line[line_len++] = (char)c;
                else
                    line_flags |= F_OVERFLOW;
            }
            if ((c = tinyml_port_read()) < 0) {
                last_read_ms = now;     /* reading takes microseconds */
                return 1;
            }
        }
    }
    line[line_len] = 0;
    handle_line();
    line_len = 0;
    line_flags = next;
    return 1;
}

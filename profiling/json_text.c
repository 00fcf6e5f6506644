/* JSON text for the trace writer (profiling/json_text.h): escaping, numbers
 * by integer arithmetic, and a strict syntax check of argument objects. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "profiling/json_text.h"

#define JSON_MAX_DEPTH 32

/* Length of the valid UTF-8 sequence at p, or 0 when it is not one
 * (overlong forms, surrogates and code points past U+10FFFF included). */
static int utf8_length(const unsigned char *p)
{
    unsigned code, min;
    int n;
    if (p[0] < 0x80)
        return 1;
    if ((p[0] & 0xe0) == 0xc0)
        n = 2, code = p[0] & 0x1fu, min = 0x80;
    else if ((p[0] & 0xf0) == 0xe0)
        n = 3, code = p[0] & 0x0fu, min = 0x800;
    else if ((p[0] & 0xf8) == 0xf0)
        n = 4, code = p[0] & 0x07u, min = 0x10000;
    else
        return 0;
    for (int i = 1; i < n; ++i) {
        if ((p[i] & 0xc0) != 0x80) /* also stops at the terminator */
            return 0;
        code = (code << 6) | (p[i] & 0x3fu);
    }
    if (code < min || code > 0x10ffff || (code >= 0xd800 && code <= 0xdfff))
        return 0;
    return n;
}

void convoy__json_put_string(FILE *fp, const char *s)
{
    const unsigned char *p = (const unsigned char *)s;
    fputc('"', fp);
    while (*p) {
        int n = utf8_length(p);
        if (*p == '"' || *p == '\\') {
            fputc('\\', fp);
            fputc(*p, fp);
        } else if (*p == '\n') {
            fputs("\\n", fp);
        } else if (*p == '\t') {
            fputs("\\t", fp);
        } else if (*p == '\r') {
            fputs("\\r", fp);
        } else if (*p < 0x20) {
            fprintf(fp, "\\u%04x", *p);
        } else if (n == 0) {
            fputs("\\ufffd", fp);
        } else {
            fwrite(p, 1, (size_t)n, fp);
            p += n;
            continue;
        }
        p++;
    }
    fputc('"', fp);
}

/* A figure with three decimals, by integer arithmetic so that LC_NUMERIC
 * cannot turn the point into a comma and break the JSON. */
static void put_fixed(FILE *fp, double value)
{
    long long ns = llround(fabs(value) * 1000.0);
    fprintf(fp, "%s%lld.%03lld", value < 0.0 && ns ? "-" : "", ns / 1000, ns % 1000);
}

void convoy__json_put_us(FILE *fp, double us)
{
    if (!(us > 0.0))
        us = 0.0;
    if (us > 1e12)
        us = 1e12;
    put_fixed(fp, us);
}

void convoy__json_put_number(FILE *fp, double value)
{
    if (!isfinite(value))
        value = 0.0;
    if (value > 9007199254740992.0 || value < -9007199254740992.0)
        value = value > 0.0 ? 9007199254740992.0 : -9007199254740992.0;
    if (value == floor(value))
        fprintf(fp, "%lld", (long long)value);
    else
        put_fixed(fp, value);
}

const char *convoy__json_skip_space(const char *p)
{
    while (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r')
        p++;
    return p;
}

static const char *json_string(const char *p)
{
    for (++p; *p != '"';) {
        const unsigned char ch = (unsigned char)*p;
        if (ch == '\\') {
            if (p[1] == 'u') {
                for (int i = 2; i < 6; ++i) {
                    if (!p[i] || !strchr("0123456789abcdefABCDEF", p[i]))
                        return NULL;
                }
                p += 6;
            } else if (p[1] && strchr("\"\\/bfnrt", p[1])) {
                p += 2;
            } else {
                return NULL;
            }
        } else {
            int n = ch < 0x20 ? 0 : utf8_length((const unsigned char *)p);
            if (n == 0)
                return NULL;
            p += n;
        }
    }
    return p + 1;
}

static const char *json_digits(const char *p)
{
    if (*p < '0' || *p > '9')
        return NULL;
    while (*p >= '0' && *p <= '9')
        p++;
    return p;
}

static const char *json_number(const char *p)
{
    if (*p == '-')
        p++;
    if (*p == '0')
        p++;
    else if (!(p = json_digits(p)))
        return NULL;
    if (*p == '.' && !(p = json_digits(p + 1)))
        return NULL;
    if (*p == 'e' || *p == 'E') {
        p++;
        if (*p == '+' || *p == '-')
            p++;
        p = json_digits(p);
    }
    return p;
}

/* Returns the end of the JSON value at p, or NULL when it is not one. */
static const char *json_value(const char *p, int depth)
{
    p = convoy__json_skip_space(p);
    if (*p == '"')
        return json_string(p);
    if (*p == '{' || *p == '[') {
        const char close = *p == '{' ? '}' : ']';
        if (depth == JSON_MAX_DEPTH)
            return NULL;
        p = convoy__json_skip_space(p + 1);
        if (*p == close)
            return p + 1;
        for (;;) {
            if (close == '}') {
                if (*p != '"' || !(p = json_string(p)))
                    return NULL;
                p = convoy__json_skip_space(p);
                if (*p++ != ':')
                    return NULL;
            }
            if (!(p = json_value(p, depth + 1)))
                return NULL;
            p = convoy__json_skip_space(p);
            if (*p == close)
                return p + 1;
            if (*p++ != ',')
                return NULL;
            p = convoy__json_skip_space(p);
        }
    }
    if (!strncmp(p, "true", 4) || !strncmp(p, "null", 4))
        return p + 4;
    if (!strncmp(p, "false", 5))
        return p + 5;
    return json_number(p);
}

int convoy__json_is_object(const char *s)
{
    s = convoy__json_skip_space(s);
    if (*s != '{')
        return 0;
    s = json_value(s, 0);
    return s && *convoy__json_skip_space(s) == '\0';
}

/* The small pieces of JSON the trace writer needs: strings escaped (invalid
 * UTF-8 becomes U+FFFD), numbers written without the C locale (setlocale()
 * cannot turn a decimal point into a comma), and a strict check that a text
 * is one JSON object, so caller-supplied arguments never break the file. */
#ifndef CONVOY_PROFILING_JSON_TEXT_H
#define CONVOY_PROFILING_JSON_TEXT_H

#include <stdio.h>

/* Writes s as a JSON string literal, quotes included. */
void convoy__json_put_string(FILE *fp, const char *s);

/* A non-negative microsecond figure with three decimals ("12.345"); NaN and
 * negatives are written as 0, values past 1e12 as 1e12. */
void convoy__json_put_us(FILE *fp, double us);

/* Any finite number: integral values up to 2^53 as integers, others with
 * three decimals; NaN and infinities as 0. */
void convoy__json_put_number(FILE *fp, double value);

/* 1 when text (leading and trailing blanks allowed) is exactly one JSON
 * object, 0 otherwise. */
int convoy__json_is_object(const char *text);

/* text with its leading blanks skipped. */
const char *convoy__json_skip_space(const char *text);

#endif /* CONVOY_PROFILING_JSON_TEXT_H */

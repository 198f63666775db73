/*
 * json_escape: how the daemon writes one ASCII byte inside a JSON string,
 * the one rule of the event writer (bridge/event.c) and the log lines
 * (bridge/log.c). It is cJSON's, so that events read byte for byte as they
 * did when cJSON printed them: the two-letter escapes JSON has, \u00XX for
 * the other control characters, every other byte as it is. Bytes from 0x80
 * are the callers' (the events check UTF-8 on the whole text, the logs
 * replace what is not UTF-8).
 */
#ifndef SB_JSON_ESCAPE_H
#define SB_JSON_ESCAPE_H

#include <stddef.h>
#include <string.h>

/* The longest JSON text of one byte: "\u00XX". */
#define JSON_ESCAPE_MAX 6

/* True when c (< 0x80) cannot appear as it is in a JSON string. */
static inline int json_escape_needed(unsigned char c)
{
    return c < 0x20 || c == '"' || c == '\\';
}

/* Writes the JSON text of c (< 0x80) into out (no NUL) and returns its
 * length, 1..JSON_ESCAPE_MAX. */
static inline size_t json_escape_ascii(unsigned char c, char out[JSON_ESCAPE_MAX])
{
    static const char named[] = "\"\\\b\f\n\r\t", letter[] = "\"\\bfnrt",
                      hex[] = "0123456789abcdef";
    if (!json_escape_needed(c)) {
        out[0] = (char)c;
        return 1;
    }
    const char *e = c != '\0' ? strchr(named, c) : NULL;
    out[0] = '\\';
    if (e != NULL) {
        out[1] = letter[e - named];
        return 2;
    }
    memcpy(out + 1, "u00", 3);
    out[4] = hex[c >> 4];
    out[5] = hex[c & 0xf];
    return JSON_ESCAPE_MAX;
}

#endif /* SB_JSON_ESCAPE_H */

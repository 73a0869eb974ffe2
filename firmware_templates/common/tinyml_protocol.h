/*
 * tinyml_protocol.h - the ipytinyml serial protocol (docs/protocol.md).
 *
 * Hand-written template: ipytinyml copies this file unchanged into every
 * generated sketch, with tinyml_protocol.cpp and tinyml_port.h. Edit it here,
 * in firmware_templates/common/, never in a sketch folder.
 *
 * A sketch calls tinyml_protocol_begin() once after Serial.begin() and
 * tinyml_protocol_poll() from loop(). The model comes from tinyml_model.h
 * (see docs/internals.md): TINYML_N_INPUTS, TINYML_N_OUTPUTS, the int8
 * quantization of input and output, and tinyml_model_invoke().
 */
#ifndef TINYML_PROTOCOL_H
#define TINYML_PROTOCOL_H

#include "tinyml_port.h"

#define TINYML_PROTO_VERSION 2
#define TINYML_LINE_MAX 79      /* characters per received line, without '\n' */
/* Line ends by silence (docs/protocol.md, Framing): a Serial Monitor entry
 * arrives back to back, a person types with gaps of 100 ms or more. */
#define TINYML_LINE_SILENCE_MS 50   /* no byte read for this long ends a line */
#define TINYML_LINE_SILENCE1_MS 1000 /* ... or this long, for a one-byte line */
#define TINYML_TYPED_GAP_MS 20      /* a longer gap inside a line: typed, no silence ends it */

#ifdef __cplusplus
extern "C" {
#endif

/* Reset the line state and print the boot banner. board_flash is the board
 * name as a TINYML_FLASH("...") string (it must stay valid). */
void tinyml_protocol_begin(const char *board_flash);

/* Read the bytes that are pending and answer a line when one is complete.
 * Returns 0 when no byte was pending (the caller may sleep), 1 otherwise. */
int tinyml_protocol_poll(void);

#ifdef __cplusplus
}
#endif

#endif /* TINYML_PROTOCOL_H */

# ruff: noqa: F821
# The PIO program that reads an MCP3208 (8-channel 12-bit SPI ADC, SPI mode 0) for
# boards/rp2_mcp3208.py: per conversion, one 32-bit command word from the TX FIFO (the
# 24 bits to send, left-aligned: 0000 0 start SGL D2 D1 D0 then zeros), CS low, 24 clocks
# out on MOSI and in on MISO, CS high, the 24 bits read pushed to the RX FIFO (the
# conversion is their low 12 bits). A fixed CYCLES state-machine cycles per conversion, so
# the state machine's clock divider paces the conversions; pull blocks until the command
# DMA has put the next word in, which it always has (it runs ahead). SCK is low for three
# cycles and high for two: MISO (changed by the MCP3208 on SCK's falling edge, within 200 ns)
# is sampled on the rising edge, through the input synchroniser's two cycles, after it
# settled. The names inside mcp3208() are the rp2 assembler's (asm_pio runs the body).

import rp2

CYCLES = 125      # 5 set-up cycles + 24 bits x 5 cycles
BIT_CYCLES = 5    # SCK = state-machine clock / 5


@rp2.asm_pio(out_init=rp2.PIO.OUT_LOW, set_init=rp2.PIO.OUT_HIGH,
             sideset_init=rp2.PIO.OUT_LOW, out_shiftdir=rp2.PIO.SHIFT_LEFT,
             in_shiftdir=rp2.PIO.SHIFT_LEFT)
def mcp3208():
    pull()                  .side(0)   # the next command word (blocks until there is one)
    set(pins, 0)            .side(0)   # CS low
    set(x, 23)              .side(0)
    label("bit")
    out(pins, 1)            .side(0)   # MOSI, SCK falls
    nop()                   .side(0)
    nop()                   .side(0)
    in_(pins, 1)            .side(1)   # SCK rises: MISO in
    jmp(x_dec, "bit")       .side(1)
    set(pins, 1)            .side(0)   # CS high
    push()                  .side(0)   # the 24 bits read

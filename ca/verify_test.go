package ca

import (
	"math/big"
	"testing"
)

// TestFormatSerialNumber: serials print byte by byte, leading zero kept (issue 29:
// "0a3f..." was printed "a3f...", unlike openssl and Vault), and read back.
func TestFormatSerialNumber(t *testing.T) {
	for in, want := range map[int64]string{0: "00", 10: "0a", 255: "ff", 256: "0100", 0x0a3f01: "0a3f01", -10: "-0a"} {
		n := big.NewInt(in)
		got := FormatSerialNumber(n)
		if got != want {
			t.Errorf("FormatSerialNumber(%#x) = %q, want %q", in, got, want)
		}
		if in <= 0 { // not a serial a certificate may have
			continue
		}
		if back, err := ParseSerial(got); err != nil || back.Cmp(n) != 0 {
			t.Errorf("ParseSerial(%q) = %v, %v", got, back, err)
		}
	}
}

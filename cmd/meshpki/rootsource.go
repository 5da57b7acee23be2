package main

import (
	"context"
	"errors"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/meshpki/meshpki/ca"
)

// rootSourceFlags are the flags that choose where the root lives.
func rootSourceFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "root-dir", Usage: "folder holding root-cert.pem and root-key.pem"},
	}
}

// rootSource is where the root lives, after flag parsing.
type rootSource struct {
	Dir string
}

func parseRootSource(c *cli.Context) (rootSource, error) {
	s := rootSource{Dir: c.String("root-dir")}
	if s.Dir == "" {
		return s, inputError(errors.New("no root given: pass --root-dir DIR"))
	}
	return s, nil
}

// issuer opens the root source. Errors reading the root are bad input (exit 2).
func (s rootSource) issuer(_ context.Context, e *env) (ca.Issuer, error) {
	root, err := ca.ReadRootDir(s.Dir, time.Now())
	if err != nil {
		return nil, inputError(err)
	}
	e.log.Debug("root loaded", "subject", root.Cert.Subject.String(), "notAfter", root.Cert.NotAfter)
	return ca.NewLocalIssuer(root), nil
}

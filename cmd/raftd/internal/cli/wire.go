package cli

import (
	"context"
	"errors"
)

// startNode builds a node from its parts (storage, transport, plugin host,
// node driver, client API server).
func startNode(ctx context.Context, cfg nodeConfig) (*runningNode, error) {
	if _, err := checkPlugin(cfg.FSMPath, cfg.FSMSHA256); err != nil {
		return nil, err
	}
	return nil, withCode(ExitFailure, errors.New("run: the node driver is not wired into this build yet"))
}

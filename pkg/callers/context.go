package callers

import "context"

type ctxKey struct{}

// NewContext returns a copy of ctx that carries c, as http.Server.ConnContext
// stores a connection's caller for its requests.
func NewContext(ctx context.Context, c Caller) context.Context {
	return context.WithValue(ctx, ctxKey{}, c)
}

// FromContext returns the caller stored by NewContext. A context without one
// yields an Unidentified caller and false.
func FromContext(ctx context.Context) (Caller, bool) {
	c, ok := ctx.Value(ctxKey{}).(Caller)
	if !ok {
		return Caller{Reason: "not identified"}, false
	}
	return c, true
}

"""The projector: a Faust app that turns `<ctx>.events` into projection tables and topics."""

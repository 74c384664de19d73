SELECT line_uid FROM ${stage}

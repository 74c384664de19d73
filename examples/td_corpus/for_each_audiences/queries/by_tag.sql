SELECT line_uid FROM line_members WHERE tags = '${audience}'

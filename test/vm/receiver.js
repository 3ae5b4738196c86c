// A webhook receiver for the package test's guest (run with the package's own node): every record of each
// POSTed {"records":[...]} batch as one JSON line appended to the output file, then 200.
//   node receiver.js PORT OUT
'use strict';
const http = require('node:http');
const fs = require('node:fs');
const [port, out] = process.argv.slice(2);
http
  .createServer((req, res) => {
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => {
      try {
        const body = JSON.parse(Buffer.concat(chunks).toString('utf8'));
        fs.appendFileSync(out, body.records.map((r) => JSON.stringify(r) + '\n').join(''));
        res.writeHead(200).end();
      } catch (e) {
        console.error(`receiver: bad body: ${e.message}`);
        res.writeHead(400).end();
      }
    });
  })
  .listen(Number(port), '127.0.0.1', () => console.log(`receiver: listening on 127.0.0.1:${port}`));
